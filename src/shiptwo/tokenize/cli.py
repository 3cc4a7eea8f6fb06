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
from shiptwo.jsonout import print_json
from shiptwo.shards.format import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    DEFAULT_MAX_UNK_RATIO,
    DEFAULT_SHARD_TOKENS,
    EosPolicy,
    OnBadLine,
)
from shiptwo.tokenize.bytelevel import PRETOKENIZERS

# Plain strings: argparse lists choices by repr.
_EOS_POLICIES = tuple(str(p) for p in EosPolicy)
_ON_BAD_LINE = tuple(str(p) for p in OnBadLine)


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
    p.add_argument(
        "--output",
        type=Path,
        required=True,
        help="dir for vocab.json + merges.txt (created if missing; files of those names are replaced)",
    )
    p.add_argument("--content-field", default="content", help="JSON field holding the text (default content)")
    p.add_argument(
        "--min-frequency",
        type=int,
        default=2,
        help="merge only pairs seen at least this often (>= 1, default 2)",
    )
    p.add_argument(
        "--on-bad-line",
        choices=_ON_BAD_LINE,
        default=str(OnBadLine.ERROR),
        help="invalid JSON or UTF-8, a missing/non-string field or a lone surrogate: "
        "stop (error, default) or count and skip",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress of the merges on stderr")
    _add_format(p)
    p.set_defaults(func=_run_train)

    p = sub.add_parser("fetch-qwen2", help="build the real Qwen2 tokenizer from the pinned dashscope wheel")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="default $SHIPTWO_CACHE_DIR, else $XDG_CACHE_HOME/shiptwo, else ~/.cache/shiptwo",
    )
    p.add_argument(
        "--wheel", type=Path, default=None, help="use this dashscope wheel instead of pip download"
    )
    p.add_argument("--force", action="store_true", help="rebuild even when already built")
    _add_format(p)
    p.set_defaults(func=_run_fetch_qwen2)

    p = sub.add_parser("encode-corpus", help="encode JSONL into pretokenize-bin-v1 shards with an audit")
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer dir or file (format detected)")
    p.add_argument("--corpus", nargs="+", required=True, type=Path, help="JSONL files or dirs of *.jsonl")
    p.add_argument(
        "--output",
        required=True,
        type=Path,
        help="shard dir: new or empty, or an interrupted run (progress.json) continued with --resume; "
        "a dir holding other files is refused unless --force",
    )
    p.add_argument("--content-field", default="content", help="JSON field holding the text (default content)")
    p.add_argument(
        "--eos-policy",
        choices=_EOS_POLICIES,
        default=str(EosPolicy.BETWEEN),
        help="EOS before every document but the first (between, default), after each, or none",
    )
    p.add_argument(
        "--shard-tokens",
        type=int,
        default=DEFAULT_SHARD_TOKENS,
        help="close a shard after the document that brings it to this many tokens "
        f"(default {DEFAULT_SHARD_TOKENS:,})",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="encoding processes (byte-level vocabs already use all cores inside tokenizers; each "
        "worker gets cores/workers tokenizers threads unless RAYON_NUM_THREADS is set)",
    )
    p.add_argument(
        "--max-unk-ratio",
        type=float,
        default=DEFAULT_MAX_UNK_RATIO,
        help=f"refuse above this unk ratio (default {DEFAULT_MAX_UNK_RATIO})",
    )
    p.add_argument("--allow-unk", action="store_true", help="accept any unk ratio (still audited)")
    p.add_argument(
        "--on-bad-line",
        choices=_ON_BAD_LINE,
        default=str(OnBadLine.ERROR),
        help="invalid JSON or a missing/non-string field: stop (error, default) or count and skip",
    )
    p.add_argument(
        "--max-document-bytes",
        type=int,
        default=DEFAULT_MAX_DOCUMENT_BYTES,
        help="a longer JSONL line is a bad line, never read whole "
        f"(default {DEFAULT_MAX_DOCUMENT_BYTES:,} bytes; see docs/pretokenize-bin-v1.md for memory)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --output (same tokenizer, corpus and options); "
        "on a finished run with the same settings, do nothing",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty --output dir that holds no run; its files are left alone "
        "(only encode-corpus's own .shard-*.tmp / .*.json.*.tmp temp files are ever deleted)",
    )
    p.add_argument(
        "--pretokenizer",
        choices=PRETOKENIZERS,
        default=None,
        help="pre-tokenizer of a byte-level vocab.json+merges.txt without tokenizer_config.json",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _add_format(p)
    p.set_defaults(func=_run_encode_corpus)

    p = sub.add_parser("encode", help="encode text (argument or stdin) and print the ids")
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--pretokenizer", choices=PRETOKENIZERS, default=None)
    p.add_argument("text", nargs="?", default=None, help="UTF-8 text (default: read stdin)")
    _add_format(p)
    p.set_defaults(func=_run_encode)

    p = sub.add_parser("decode", help="decode ids (arguments or stdin) and print the text")
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--pretokenizer", choices=PRETOKENIZERS, default=None)
    p.add_argument(
        "ids",
        nargs="*",
        type=int,
        help="token ids (default: read stdin: whitespace-separated ids or a JSON list)",
    )
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help='text: the decoded text as is (no newline added); json: {"text": ..., "tokens": N}',
    )
    p.set_defaults(func=_run_decode)


def _run_detect(args: argparse.Namespace) -> int:
    from shiptwo.tokenize import detect_format

    report = detect_format(args.path)
    if args.format == "json":
        print_json(report.to_dict(), indent=2)
    else:
        print(f"{report.path}: {report.format} ({report.layout}): {report.reason}")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from shiptwo.shards.format import BadLine
    from shiptwo.tokenize.hexbpe import train_hex_bpe
    from shiptwo.tokenize.jsonl import bad_line_error, list_inputs, read_documents

    # Everything checkable before reading the corpus is checked first: training can take minutes.
    if args.min_frequency < 1:
        raise UsageError(
            "--min-frequency must be >= 1 (a pair must occur at least once to merge), "
            f"got {args.min_frequency}"
        )
    if args.output.exists() and not args.output.is_dir():
        raise UsageError(
            f"--output {args.output}: exists and is not a directory; "
            "choose a directory for vocab.json + merges.txt"
        )
    files = list_inputs(args.corpus)
    texts: list[str] = []
    bad = 0
    first_bad = ""
    # The same reader as encode-corpus: the same lines count as bad, reported as file:line.
    for item in read_documents(files, content_field=args.content_field):
        if isinstance(item, BadLine):
            if args.on_bad_line == OnBadLine.ERROR:
                raise bad_line_error(item)
            bad += 1
            first_bad = first_bad or str(item)
            continue
        texts.append(item)
    if not any(texts):
        names = ", ".join(map(str, files[:3])) + (", ..." if len(files) > 3 else "")
        what = f"{len(texts)} documents, all empty" if texts else "no documents"
        skipped = f" ({bad} bad lines skipped, first: {first_bad})" if bad else ""
        raise UsageError(
            f"--corpus {names}: {what}{skipped}; there is nothing to train on: "
            f"check the files and --content-field {args.content_field!r}"
        )
    from shiptwo.progress import progress
    from shiptwo.tokenize.hexbpe import SPECIAL_TOKENS

    # Hours on a large corpus: each merge is shown (its total is an upper bound, as training stops
    # early when no pair occurs --min-frequency times).
    shown = progress(
        total=max(args.vocab_size - len(SPECIAL_TOKENS) - 256, 0),
        desc="tokenize train",
        unit="merge",
        enabled=not args.no_progress,
    )
    try:
        tok = train_hex_bpe(
            texts, vocab_size=args.vocab_size, min_frequency=args.min_frequency, progress=shown
        )
    finally:
        shown.close()
    tok.save(args.output)
    if args.format == "json":
        print_json(
            {
                "output": str(args.output),
                "files": [str(args.output / name) for name in ("vocab.json", "merges.txt")],
                "vocab_size": tok.vocab_size,
                "merges": len(tok.merges),
                "documents": len(texts),
                "bad_lines": bad,
            },
            indent=2,
        )
        return 0
    skipped = f", {bad} bad lines skipped" if bad else ""
    print(
        f"{args.output}: hex-byte BPE, {tok.vocab_size} ids, {len(tok.merges)} merges "
        f"from {len(texts)} documents{skipped}"
    )
    return 0


def _run_fetch_qwen2(args: argparse.Namespace) -> int:
    from shiptwo.tokenize.qwen2 import DASHSCOPE_VERSION, fetch_qwen2

    path, built = fetch_qwen2(cache_dir=args.cache_dir, wheel=args.wheel, force=args.force)
    if args.format == "json":
        print_json({"path": str(path), "built": built, "source": f"dashscope=={DASHSCOPE_VERSION}"})
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
        max_document_bytes=args.max_document_bytes,
        resume=args.resume,
        force=args.force,
        pretokenizer=args.pretokenizer,
        progress=not args.no_progress,
    )
    audit = manifest["audit"]
    if args.format == "json":
        print_json(manifest, indent=2, ensure_ascii=False)
        return 0
    rate = manifest["total_tokens"] / max(manifest["elapsed_seconds"], 1e-9)
    print(
        f"{args.output}: {manifest['shard_count']} shards, {manifest['total_tokens']:,} tokens, "
        f"{manifest['total_documents']:,} documents, {manifest['bad_lines']['count']} bad lines, "
        f"{manifest['elapsed_seconds']:.1f} s ({rate:,.0f} tok/s)"
    )
    unk = f"unk {audit['unk_ratio']:.4%}" if audit["unk_token_id"] is not None else audit["unk_note"]
    print(
        f"audit: {unk}, {audit['distinct_tokens']:,} distinct tokens, entropy "
        f"{audit['entropy_bits']:.3f} bits of log2(vocab) {audit['max_entropy_bits']:.2f}"
    )
    return 0


def _run_encode(args: argparse.Namespace) -> int:
    from shiptwo.tokenize import load_tokenizer
    from shiptwo.tokenize.jsonl import unicode_problem

    if args.text is not None:
        text = args.text
        # Linux hands Python argv bytes that are not UTF-8 as lone surrogates (surrogateescape).
        problem = unicode_problem(text)
        if problem is not None:
            raise UsageError(f"text argument: {problem} (its bytes are not UTF-8?); pass UTF-8 text")
    else:
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"stdin: not UTF-8 (byte 0x{data[exc.start]:02x} at byte {exc.start}); pass UTF-8 text"
            ) from exc
    ids = load_tokenizer(args.tokenizer, pretokenizer=args.pretokenizer).encode(text)
    if args.format == "json":
        print_json(ids)
    else:
        print(" ".join(map(str, ids)))
    return 0


def _read_ids(text: str) -> list[int]:
    """Ids from stdin: whitespace-separated integers, or the JSON list `encode --format json` prints."""
    if text.lstrip().startswith("["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"stdin: not a JSON list of ids ({exc}); pass [1, 2, ...] or whitespace-separated ids"
            ) from exc
        if not isinstance(doc, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in doc):
            raise UsageError("stdin: the JSON list holds something other than integer ids; pass [1, 2, ...]")
        return doc
    ids = []
    for n, word in enumerate(text.split(), 1):
        try:
            ids.append(int(word))
        except ValueError as exc:
            raise UsageError(
                f"stdin: token {n} is {word[:40]!r}, not an integer id; pass whitespace-separated ids"
            ) from exc
    return ids


def _run_decode(args: argparse.Namespace) -> int:
    from shiptwo.tokenize import load_tokenizer

    # Ids are ASCII; any other byte is shown in the error, so decoding stdin never fails here.
    ids = args.ids or _read_ids(sys.stdin.buffer.read().decode("utf-8", errors="replace"))
    tok = load_tokenizer(args.tokenizer, pretokenizer=args.pretokenizer)
    for n, i in enumerate(ids, 1):
        if not 0 <= i < tok.vocab_size:
            raise UsageError(
                f"id {i} (token {n}) is outside the vocab of {args.tokenizer} (0..{tok.vocab_size - 1})"
            )
    text = tok.decode(ids)
    if args.format == "json":
        print_json({"text": text, "tokens": len(ids)})
    else:
        sys.stdout.write(text)
    return 0
