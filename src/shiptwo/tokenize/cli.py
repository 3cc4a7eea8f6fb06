"""`shiptwo tokenize ...`: detect, train, fetch-qwen2, encode-corpus, encode, decode.

Imports only argparse and light stdlib at module level; each command imports what it drives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shiptwo.errors import UsageError


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")


def register(subparsers: Any) -> None:
    """Add the `tokenize` command group."""
    group = subparsers.add_parser("tokenize", help="BPE vocabs: detect, train, fetch Qwen2, encode corpora")
    sub = group.add_subparsers(dest="tokenize_command", metavar="SUBCOMMAND", parser_class=type(group))
    group.set_defaults(func=lambda args: (group.print_help(sys.stderr), 2)[1])

    p = sub.add_parser("detect", help="classify a vocab (hex-byte or byte-level) and say why")
    p.add_argument("path", type=Path, help="tokenizer dir, tokenizer.json, vocab.json or *.tiktoken")
    _add_format(p)
    p.set_defaults(func=_run_detect)

    p = sub.add_parser("train", help="train a hex-byte BPE (aprender's `apr tokenize train` layout)")
    p.add_argument("--corpus", nargs="+", required=True, type=Path, help="JSONL files or dirs")
    p.add_argument("--vocab-size", type=int, required=True, help="total ids, specials and 256 bytes included")
    p.add_argument("--output", type=Path, required=True, help="dir for vocab.json + merges.txt")
    p.add_argument("--content-field", default="content")
    p.add_argument("--min-frequency", type=int, default=2)
    p.set_defaults(func=_run_train)

    p = sub.add_parser("fetch-qwen2", help="build the real Qwen2 tokenizer from the pinned dashscope wheel")
    p.add_argument("--cache-dir", type=Path, default=None, help="default $SHIPTWO_CACHE_DIR or ~/.cache/shiptwo")
    p.add_argument("--wheel", type=Path, default=None, help="use this dashscope wheel instead of pip download")
    p.add_argument("--force", action="store_true", help="rebuild even when already built")
    _add_format(p)
    p.set_defaults(func=_run_fetch_qwen2)

    p = sub.add_parser("encode-corpus", help="encode JSONL into pretokenize-bin-v1 shards with an audit")
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer dir or file (format detected)")
    p.add_argument("--corpus", nargs="+", required=True, type=Path, help="JSONL files or dirs of *.jsonl")
    p.add_argument("--output", required=True, type=Path, help="shard dir (empty, or an interrupted run with --resume)")
    p.add_argument("--content-field", default="content", help="JSON field holding the text (default content)")
    p.add_argument("--eos-policy", choices=("between", "after", "none"), default="between",
                   help="EOS before every document but the first (between, default), after each, or none")
    p.add_argument("--shard-tokens", type=int, default=10_000_000,
                   help="close a shard after the document that brings it to this many tokens (default 10,000,000)")
    p.add_argument("--workers", type=int, default=1,
                   help="encoding processes (byte-level vocabs already use all cores inside tokenizers)")
    p.add_argument("--max-unk-ratio", type=float, default=0.01, help="refuse above this unk ratio (default 0.01)")
    p.add_argument("--allow-unk", action="store_true", help="accept any unk ratio (still audited)")
    p.add_argument("--on-bad-line", choices=("error", "skip"), default="error",
                   help="invalid JSON or a missing/non-string field: stop (error, default) or count and skip")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    p.add_argument("--pretokenizer", choices=("qwen2", "gpt2"), default=None,
                   help="pre-tokenizer of a byte-level vocab.json+merges.txt without tokenizer_config.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_format(p)
    p.set_defaults(func=_run_encode_corpus)

    p = sub.add_parser("encode", help="encode text (argument or stdin) and print the ids")
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--pretokenizer", choices=("qwen2", "gpt2"), default=None)
    p.add_argument("text", nargs="?", default=None)
    _add_format(p)
    p.set_defaults(func=_run_encode)

    p = sub.add_parser("decode", help="decode ids (arguments or stdin) and print the text")
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--pretokenizer", choices=("qwen2", "gpt2"), default=None)
    p.add_argument("ids", nargs="*", type=int)
    p.set_defaults(func=_run_decode)


def _run_detect(args: argparse.Namespace) -> int:
    from shiptwo.tokenize import detect_format

    report = detect_format(args.path)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{report.path}: {report.format} ({report.layout}): {report.reason}")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from shiptwo.tokenize.corpus import list_inputs
    from shiptwo.tokenize.hexbpe import train_hex_bpe

    texts: list[str] = []
    for f in list_inputs(args.corpus):
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)[args.content_field]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise UsageError(f"{f}:{lineno}: no string field {args.content_field!r}: {exc}") from exc
                if not isinstance(text, str):
                    raise UsageError(f"{f}:{lineno}: field {args.content_field!r} is not a string")
                texts.append(text)
    tok = train_hex_bpe(texts, vocab_size=args.vocab_size, min_frequency=args.min_frequency)
    tok.save(args.output)
    print(f"{args.output}: hex-byte BPE, {tok.vocab_size} ids, {len(tok.merges)} merges from {len(texts)} documents")
    return 0


def _run_fetch_qwen2(args: argparse.Namespace) -> int:
    from shiptwo.tokenize.qwen2 import DASHSCOPE_VERSION, fetch_qwen2

    path, built = fetch_qwen2(cache_dir=args.cache_dir, wheel=args.wheel, force=args.force)
    if args.format == "json":
        print(json.dumps({"path": str(path), "built": built, "source": f"dashscope=={DASHSCOPE_VERSION}"}))
    else:
        state = "built" if built else "already built"
        print(f"{path}: Qwen2 tokenizer {state} from dashscope=={DASHSCOPE_VERSION}")
    return 0


def _run_encode_corpus(args: argparse.Namespace) -> int:
    from shiptwo.tokenize.corpus import encode_corpus

    manifest = encode_corpus(
        args.tokenizer,
        args.corpus,
        args.output,
        content_field=args.content_field,
        eos_policy=args.eos_policy,
        shard_tokens=args.shard_tokens,
        workers=args.workers,
        max_unk_ratio=None if args.allow_unk else args.max_unk_ratio,
        on_bad_line=args.on_bad_line,
        resume=args.resume,
        pretokenizer=args.pretokenizer,
        progress=not args.no_progress,
    )
    audit = manifest["audit"]
    if args.format == "json":
        print(json.dumps(manifest, indent=2, ensure_ascii=False))
        return 0
    rate = manifest["total_tokens"] / max(manifest["elapsed_seconds"], 1e-9)
    print(
        f"{args.output}: {manifest['shard_count']} shards, {manifest['total_tokens']:,} tokens, "
        f"{manifest['total_documents']:,} documents, {manifest['bad_lines']['count']} bad lines, "
        f"{manifest['elapsed_seconds']:.1f} s ({rate:,.0f} tok/s)"
    )
    print(
        f"audit: unk {audit['unk_ratio']:.4%}, {audit['distinct_tokens']:,} distinct tokens, entropy "
        f"{audit['entropy_bits']:.3f} bits of log2(vocab) {audit['max_entropy_bits']:.2f}"
    )
    return 0


def _run_encode(args: argparse.Namespace) -> int:
    from shiptwo.tokenize import load_tokenizer

    text = args.text if args.text is not None else sys.stdin.read()
    ids = load_tokenizer(args.tokenizer, pretokenizer=args.pretokenizer).encode(text)
    print(json.dumps(ids) if args.format == "json" else " ".join(map(str, ids)))
    return 0


def _run_decode(args: argparse.Namespace) -> int:
    from shiptwo.tokenize import load_tokenizer

    ids = args.ids or [int(x) for x in sys.stdin.read().split()]
    sys.stdout.write(load_tokenizer(args.tokenizer, pretokenizer=args.pretokenizer).decode(ids))
    return 0
