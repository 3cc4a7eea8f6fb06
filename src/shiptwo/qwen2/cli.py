"""`shiptwo train` and `shiptwo eval`: fine-tune a Qwen2 on corpus shards, or score it.

Only argparse and light stdlib are imported here; torch and the trainer load inside the command
functions. `torchrun --nproc_per_node N -m shiptwo train ...` runs the same command data-parallel.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shiptwo.errors import UsageError
from shiptwo.fileio import check_output_dir
from shiptwo.jsonout import dumps, print_json
from shiptwo.qwen2.gates import GATE_005_EPOCH0_MAX, GATE_005_RATIO_MAX

DEFAULT_RUNS = Path("evidence") / "train"
# Checkpoints are big and not evidence: by default they go where git ignores them.
DEFAULT_CHECKPOINTS = Path("evidence") / "scratch" / "train"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the top-level `train` and `eval` commands."""
    t = subparsers.add_parser(
        "train",
        help="fine-tune a Qwen2 (.apr or HF dir) on pretokenized shards",
        description="Fine-tune with AdamW, warmup + cosine, gradient clipping and the "
        "GATE-TRAIN-005/007 guards; writes epoch-NNN.metadata.json + "
        "epoch-NNN.apr and a run directory (command, host, config, "
        "steps.jsonl, loss.png).",
    )
    t.add_argument("--init", required=True, type=Path, help="initial model: .apr file or HF directory")
    t.add_argument("--shards", required=True, type=Path, help="training shards (pretokenize-bin-v1 dir)")
    t.add_argument("--val-shards", type=Path, help="validation shards (default: hold out --val-fraction)")
    t.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of training windows held out when --val-shards is absent (default 0.1)",
    )
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--steps", type=int, help="stop after this many optimizer steps in total")
    t.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    t.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor as a share of --lr")
    t.add_argument("--warmup-steps", type=int, help="linear warmup steps (default 5%% of the run)")
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm")
    t.add_argument("--batch-size", type=int, default=8, help="global batch, in sequences")
    t.add_argument("--seq-len", type=int, default=128)
    t.add_argument("--eval-batches", type=int, help="validation batches per evaluation (default all)")
    t.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="bf16 = bf16 autocast over fp32 weights; auto = bf16 on cuda, fp32 on cpu",
    )
    t.add_argument(
        "--output",
        type=Path,
        help=f"dir for epoch-NNN.apr + epoch-NNN.metadata.json (default {DEFAULT_CHECKPOINTS}/<UTC time>)",
    )
    t.add_argument(
        "--run-dir", type=Path, help=f"evidence dir for this run (default {DEFAULT_RUNS}/<UTC time>)"
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--gate-val-loss-max",
        type=float,
        metavar="NATS",
        help="GATE-TRAIN-005: abort when the epoch-0 val_loss exceeds this (default "
        f"{GATE_005_EPOCH0_MAX}, or [tool.shiptwo.train] val_loss_max in pyproject.toml). A model "
        "trained from scratch starts near ln(vocab): 11.93 for Qwen2's 151,936 ids, so give e.g. 12.5",
    )
    t.add_argument(
        "--gate-val-rise-factor",
        type=float,
        metavar="X",
        help="GATE-TRAIN-005: abort when a later val_loss exceeds X times the previous one (default "
        f"{GATE_005_RATIO_MAX}, or [tool.shiptwo.train] val_rise_factor)",
    )
    t.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress on stderr (a bar on a terminal, else a plain line every few seconds)",
    )
    t.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="output format (default text); json prints the result, or the abort when a gate fires",
    )
    t.set_defaults(func=run_train)

    e = subparsers.add_parser("eval", help="score a Qwen2 on shards: val_loss (nats), perplexity, ln(vocab)")
    e.add_argument("--model", required=True, type=Path, help=".apr file or HF directory")
    e.add_argument("--shards", required=True, type=Path, help="pretokenize-bin-v1 shard dir")
    e.add_argument("--seq-len", type=int, default=128)
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--max-batches", type=int, help="evaluate at most this many batches (default all)")
    e.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    e.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="weights dtype for evaluation")
    e.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    e.set_defaults(func=run_eval)


def _positive(name: str, value: float | None) -> None:
    # `not value > 0` also refuses NaN, which every ordered comparison lets through.
    if value is not None and not value > 0:
        raise UsageError(f"{name} {value}: must be a positive number")
    if value is not None and math.isinf(value):
        raise UsageError(f"{name} {value}: must be finite")


def _check_optimizer_options(args: argparse.Namespace) -> None:
    """Refuse optimizer settings that would silently train wrong (a negative clip flips every gradient)."""
    if not math.isfinite(args.grad_clip) or args.grad_clip <= 0:
        raise UsageError(
            f"--grad-clip {args.grad_clip}: must be a finite number > 0 (the max global "
            "gradient norm; a negative one would reverse every gradient)"
        )
    if args.warmup_steps is not None and args.warmup_steps < 0:
        raise UsageError(f"--warmup-steps {args.warmup_steps}: must be >= 0 (0 = no warmup)")
    if not (math.isfinite(args.min_lr_ratio) and 0 <= args.min_lr_ratio <= 1):
        raise UsageError(
            f"--min-lr-ratio {args.min_lr_ratio}: must lie in [0, 1] (the cosine floor as a share of --lr)"
        )
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise UsageError(f"--weight-decay {args.weight_decay}: must be a finite number >= 0")


def keep_freed_memory() -> None:
    """On glibc, keep freed large blocks in the heap for reuse instead of unmapping them.

    A large-vocabulary step allocates tensors of tens to hundreds of MiB (logit chunks, their
    gradients, the embedding gradient). glibc maps each one fresh and unmaps it on free, so every
    step faults its pages in again and the kernel zeroes them: `train` and `eval` on a 151,936-token
    vocab spent more sys than user time. Raising the mmap and trim thresholds lets the next step
    reuse the pages (the resident size stays at the peak, as with PyTorch's CUDA caching allocator).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc (musl, ...): nothing to tune
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h> parameter numbers
    mallopt(m_mmap_threshold, 1 << 30)
    mallopt(m_trim_threshold, (1 << 31) - 1)


def _reader(directory: Path, seq_len: int, *, model_vocab: int, what: str) -> Any:
    from shiptwo.shards import ShardReader, load_manifest

    manifest = load_manifest(directory)
    vocab = int(manifest.get("vocab_size") or 0)
    if vocab > model_vocab:
        raise UsageError(
            f"{what} {directory}: manifest vocab_size {vocab} exceeds the model's vocab "
            f"{model_vocab}; ids would index past the embedding (use a matching tokenizer)"
        )
    return ShardReader(directory, seq_len=seq_len)


class _Subset:
    """Some windows of a reader, by index (a held-out split)."""

    def __init__(self, reader: Any, indices: range) -> None:
        self.reader, self.indices = reader, indices

    def __len__(self) -> int:
        return len(self.indices)

    def window(self, i: int) -> Any:
        return self.reader.window(self.indices[i])


# `[tool.shiptwo.train]` keys and the `shiptwo train` options they give defaults to.
TRAIN_TABLE_KEYS = {"val_loss_max": "--gate-val-loss-max", "val_rise_factor": "--gate-val-rise-factor"}


def gate_limits(args: argparse.Namespace, root: Path) -> tuple[float, float]:
    """GATE-TRAIN-005's (epoch-0 val_loss ceiling, rise factor): each from its flag, else from
    the `[tool.shiptwo.train]` table of `root`'s pyproject.toml, else the seeds' default.

    A bad value is a UsageError naming where it came from (the option, or the file and key).
    """
    from shiptwo.harness.config import load_config

    config = load_config(root)
    where = f"{config.source or root / 'pyproject.toml'}: [tool.shiptwo.train]"
    unknown = sorted(set(config.train) - set(TRAIN_TABLE_KEYS))
    if unknown:
        raise UsageError(f"{where} key {unknown[0]!r} is unknown; known keys: {', '.join(TRAIN_TABLE_KEYS)}")
    chosen = []
    for key, default, least, wanted in (
        ("val_loss_max", GATE_005_EPOCH0_MAX, 0.0, "a finite number > 0 (nats)"),
        ("val_rise_factor", GATE_005_RATIO_MAX, 1.0, "a finite number >= 1"),
    ):
        flag = TRAIN_TABLE_KEYS[key]
        given = getattr(args, flag[2:].replace("-", "_"))
        if given is not None:
            value, source = given, flag
        elif key in config.train:
            value, source = config.train[key], f"{where} {key} ="
        else:
            value, source = default, ""
        if not (math.isfinite(value) and value >= least and value > 0):
            raise UsageError(f"{source} {value}: must be {wanted}")
        chosen.append(value)
    return chosen[0], chosen[1]


def run_train(args: argparse.Namespace) -> int:
    """`shiptwo train`: returns 0 when training finished, raises GateError when a gate fired."""
    for name in ("epochs", "steps", "lr", "batch_size", "seq_len", "eval_batches"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    _check_optimizer_options(args)
    from shiptwo.harness.config import find_root

    val_loss_max, val_rise_factor = gate_limits(args, find_root(Path.cwd()))
    if not 0 < args.val_fraction < 1:
        raise UsageError(f"--val-fraction {args.val_fraction}: must lie strictly between 0 and 1")
    for option, given in (("--run-dir", args.run_dir), ("--output", args.output)):
        if given is not None:
            check_output_dir(option, given)  # before the model loads: fail in a second, not a minute
    import torch

    from shiptwo.qwen2 import distributed
    from shiptwo.qwen2.checkpoint import from_pretrained
    from shiptwo.qwen2.rundir import host_facts
    from shiptwo.qwen2.train import TrainConfig, TrainGateError, config_dict, train

    keep_freed_memory()
    ctx = distributed.init(args.device)
    completed = False
    try:
        torch.manual_seed(args.seed)
        model = from_pretrained(args.init, device=ctx.device, dtype=torch.float32)
        vocab = model.config.vocab_size
        if args.seq_len > model.config.max_position_embeddings:
            raise UsageError(
                f"--seq-len {args.seq_len} exceeds {args.init}'s max_position_embeddings "
                f"{model.config.max_position_embeddings}; use a shorter --seq-len"
            )
        train_reader = _reader(args.shards, args.seq_len, model_vocab=vocab, what="--shards")
        if args.val_shards is not None:
            val_reader = _reader(args.val_shards, args.seq_len, model_vocab=vocab, what="--val-shards")
        else:
            n = len(train_reader)
            held = max(args.batch_size, int(n * args.val_fraction))
            if n - held < args.batch_size:
                raise UsageError(
                    f"--shards {args.shards}: {n} windows of {args.seq_len + 1} tokens cannot give "
                    f"{args.batch_size}-sequence train and val batches; add text, pass --val-shards "
                    "or lower --seq-len/--batch-size"
                )
            val_reader, train_reader = (
                _Subset(train_reader, range(n - held, n)),
                _Subset(train_reader, range(n - held)),
            )
        bf16 = args.precision == "bf16" or (args.precision == "auto" and args.device == "cuda")
        config = TrainConfig(
            lr=args.lr,
            min_lr_ratio=args.min_lr_ratio,
            warmup_steps=args.warmup_steps,
            weight_decay=args.weight_decay,
            grad_clip=args.grad_clip,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            epochs=args.epochs,
            max_steps=args.steps,
            eval_batches=args.eval_batches,
            seed=args.seed,
            autocast_bf16=bf16,
            gate_val_loss_max=val_loss_max,
            gate_val_rise_factor=val_rise_factor,
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        run_dir = check_output_dir("--run-dir", args.run_dir or DEFAULT_RUNS / stamp)
        output = check_output_dir("--output", args.output or DEFAULT_CHECKPOINTS / stamp)
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_json(
                run_dir / "command.json",
                {"argv": ["shiptwo", *sys.argv[1:]], "cwd": str(Path.cwd()), "started_at": stamp},
            )
            _write_json(run_dir / "host.json", host_facts(ctx))
            _write_json(
                run_dir / "config.json",
                {
                    "train": config_dict(config),
                    "model": model.config.to_hf(),
                    "init": str(args.init),
                    "shards": str(args.shards),
                    "val_shards": str(args.val_shards) if args.val_shards else None,
                    "train_windows": len(train_reader),
                    "val_windows": len(val_reader),
                    "device": args.device,
                    "world_size": ctx.world_size,
                    "output": str(output),
                },
            )
        try:
            result = train(
                model,
                train_reader=train_reader,
                val_reader=val_reader,
                config=config,
                output_dir=output,
                run_dir=run_dir if ctx.is_main else None,
                ctx=ctx,
                progress=not args.no_progress,
                label=str(args.init),
            )
        except TrainGateError as exc:
            if args.format == "json" and ctx.is_main:
                # A script reading stdout learns why the run stopped; stderr still gets the
                # one-line error and the exit status stays 1 (raised on to `shiptwo.cli.main`).
                print_json(
                    {"status": "aborted", "abort": exc.abort, "run_dir": str(run_dir), "output": str(output)},
                    indent=2,
                )
            raise
        completed = True
    finally:
        distributed.shutdown(ctx, completed=completed)
    if not ctx.is_main:
        distributed.exit_process(0)
    final = result.val_losses[-1] if result.val_losses else result.step0_val_loss
    summary = {
        "status": "completed",
        "step0_val_loss": result.step0_val_loss,
        "final_val_loss": final,
        "val_loss_drop_fraction": (result.step0_val_loss - final) / result.step0_val_loss,
        "ln_vocab": math.log(vocab),
        "steps": result.steps,
        "tokens_seen": result.tokens_seen,
        "run_dir": str(run_dir),
        "output": str(output),
    }
    if args.format == "json":
        print_json(summary, indent=2)
    else:
        print(
            f"val_loss {result.step0_val_loss:.4f} -> {final:.4f} nats after {result.steps} steps "
            f"(ln(vocab) = {summary['ln_vocab']:.4f}); run dir {run_dir}, checkpoints in {output}"
        )
    if ctx.active:
        distributed.exit_process(0)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """`shiptwo eval`: mean token cross-entropy of a model on shards, beside ln(vocab)."""
    for name in ("seq_len", "batch_size", "max_batches"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    import torch

    from shiptwo.qwen2.checkpoint import from_pretrained
    from shiptwo.qwen2.evaluate import evaluate

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch.cuda.is_available() is False on this host; use --device cpu")
    keep_freed_memory()
    start = time.monotonic()
    model = from_pretrained(
        args.model, device=args.device, dtype=torch.bfloat16 if args.dtype == "bf16" else torch.float32
    )
    reader = _reader(args.shards, args.seq_len, model_vocab=model.config.vocab_size, what="--shards")
    loss = evaluate(model, reader, batch_size=args.batch_size, max_batches=args.max_batches)
    batches = len(reader) // args.batch_size
    if args.max_batches is not None:
        batches = min(batches, args.max_batches)
    out = {
        "model": str(args.model),
        "shards": str(args.shards),
        "val_loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else float("inf"),
        "ln_vocab": math.log(model.config.vocab_size),
        "vocab_size": model.config.vocab_size,
        "tokens": batches * args.batch_size * args.seq_len,
        "batches": batches,
        "seconds": round(time.monotonic() - start, 3),
    }
    if args.format == "json":
        print_json(out, indent=2)
    else:
        print(
            f"val_loss {loss:.4f} nats  perplexity {out['perplexity']:.2f}  "
            f"ln(vocab) {out['ln_vocab']:.4f} (uniform)  over {out['tokens']} tokens"
        )
    return 0


def _write_json(path: Path, data: Any) -> None:
    path.write_text(dumps(data, indent=2) + "\n", encoding="utf-8")
