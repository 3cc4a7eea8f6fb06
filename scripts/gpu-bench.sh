#!/usr/bin/env bash
# Issue 13.6 on a machine with a CUDA device, in one command: the MFU of a training step of the
# real Qwen2.5-0.5B architecture (random weights: FLOPs and speed do not depend on the values, so
# no model file has to reach the machine) against the device's dense bf16 peak, transformers'
# step beside it, and CPU-vs-CUDA parity from the same weights and batch. Prints JSON.
#
#   scripts/gpu-bench.sh            BATCH=16 SEQ=1024 STEPS=10 by default
#
# Needs torch for the machine (with CUDA), transformers, and shiptwo importable (installed, or
# PYTHONPATH=src).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
"$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: this script is for GPU machines")'
exec "$py" benchmarks/bench_train.py --preset qwen2.5-0.5b --device cuda \
    --batch "${BATCH:-16}" --seq "${SEQ:-1024}" --steps "${STEPS:-10}" --format json "$@"
