#!/usr/bin/env bash
# Every CUDA and real-model falsifier, on a machine with a CUDA device, in one command; the run
# record it writes under evidence/runs/ is the evidence to commit.
#
#   scripts/gpu-falsifiers.sh [pytest args...]
#
# Needs shiptwo installed (the README's set-up, with `torch` for the machine instead of the CPU
# pin) or PYTHONPATH=src with the plugin named (SHIPTWO_PLUGIN_ARG="-p shiptwo.harness.plugin"). Offline
# machines pass the pinned files: QWEN_GGUF=/path/to/the.gguf DASHSCOPE_WHEEL=/path/to/dashscope.whl.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}

"$py" -m shiptwo tokenize fetch-qwen2 ${DASHSCOPE_WHEEL:+--wheel "$DASHSCOPE_WHEEL"}
"$py" -m shiptwo models fetch --no-progress ${QWEN_GGUF:+--gguf "$QWEN_GGUF"}
"$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: this script is for GPU machines")'
# Every gate a GPU machine with the fetched model can open is required: a closed one is an error.
SHIPTWO_REQUIRE=cuda,qwen-artifacts,qwen-gguf,qwen-tokenizer \
    "$py" -m pytest ${SHIPTWO_PLUGIN_ARG:-} -m falsifier -p no:cacheprovider "$@"
