"""`shiptwo apr ...`: import, export, inspect and diff APR v2 model files.

Only argparse and the standard library load at registration; numpy, torch and safetensors
load inside the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from shiptwo.jsonout import print_json


def register(subparsers: Any) -> None:
    """Add the `apr` command group to the top-level parser."""
    apr = subparsers.add_parser(
        "apr",
        help="APR v2 model files: import, export, inspect, diff",
        description="APR v2 model files (aprender's format).",
    )
    sub = apr.add_subparsers(dest="apr_command", metavar="COMMAND", parser_class=type(apr))
    apr.set_defaults(func=lambda args: _help(apr))

    p = sub.add_parser("import", help="import a Hugging Face model dir, a .safetensors file or a GGUF")
    p.add_argument(
        "source",
        metavar="SRC",
        help="HF model dir (config.json + *.safetensors), a .safetensors file or a qwen2 GGUF "
        "(recognised by its bytes; see docs/gguf-import.md for what is kept and what dequantized)",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT.apr")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run_import)

    p = sub.add_parser("export", help="export an APR file to .safetensors (bit-exact)")
    p.add_argument("file", metavar="FILE.apr")
    p.add_argument("-o", "--output", required=True, metavar="OUT.safetensors")
    p.add_argument(
        "--keep-tied-copy",
        action="store_true",
        help="also write the lm_head.weight copy of a tied model (HF omits it)",
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run_export)

    p = sub.add_parser("inspect", help="header, flags, checksums, metadata and tensor table")
    p.add_argument("file", metavar="FILE.apr")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--stats", action="store_true", help="per-tensor mean/std/min/max (decodes every tensor)")
    p.set_defaults(func=run_inspect)

    p = sub.add_parser(
        "diff", help="compare every tensor with a .safetensors file or HF dir (exit 1 on mismatch)"
    )
    p.add_argument("file", metavar="FILE.apr")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run_diff)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_import(args: argparse.Namespace) -> int:
    from shiptwo.apr.convert import import_model

    start = time.perf_counter()
    report = import_model(args.source, args.output)
    seconds = time.perf_counter() - start
    if args.format == "json":
        print_json(
            {
                "out": report.out,
                "tensors": report.tensors,
                "bytes": report.bytes,
                "tied_embeddings": report.tied_embeddings,
                "dtypes": report.dtypes,
                "seconds": round(seconds, 3),
            }
        )
    else:
        dtypes = ", ".join(f"{n} {k}" for k, n in sorted(report.dtypes.items()))
        tied = "; tied embeddings (lm_head.weight written as a copy)" if report.tied_embeddings else ""
        print(
            f"wrote {report.out}: {report.tensors} tensors ({dtypes}), {report.bytes / 1e6:.1f} MB "
            f"in {seconds:.2f} s{tied}"
        )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from shiptwo.apr.convert import export_model

    start = time.perf_counter()
    count = export_model(args.file, args.output, keep_tied_copy=args.keep_tied_copy)
    seconds = time.perf_counter() - start
    if args.format == "json":
        print_json(
            {
                "out": args.output,
                "tensors": count,
                "bytes": os.path.getsize(args.output),
                "seconds": round(seconds, 3),
            }
        )
    else:
        print(f"wrote {args.output}: {count} tensors")
    return 0


def inspection(path: str, *, stats: bool = False) -> dict[str, Any]:
    """Everything `apr inspect` shows, as a JSON-ready dict (both CRCs verified)."""
    from shiptwo.apr.reader import AprFile

    with AprFile(path, framework="np", verify_footer=True) as f:
        info = f.info
        h = info.header
        rows = []
        for t in info.tensors:
            row: dict[str, Any] = {
                "name": t.name,
                "dtype": t.dtype.name,
                "code": int(t.dtype),
                "shape": list(t.shape),
                "offset": t.offset,
                "size": t.size,
            }
            if t.is_placeholder:
                row["placeholder"] = True
            elif stats:
                row.update(_stats(f.get_array(t.name)))
            rows.append(row)
    return {
        "file": path,
        "file_size": info.file_size,
        "header": {
            "magic": h.magic.decode("latin-1"),
            "version": f"{h.version[0]}.{h.version[1]}",
            "flags": f"0x{h.flags:04x}",
            "flag_names": h.flag_names,
            "tensor_count": h.tensor_count,
            "metadata_offset": h.metadata_offset,
            "metadata_size": h.metadata_size,
            "tensor_index_offset": h.tensor_index_offset,
            "data_offset": h.data_offset,
        },
        "checksums": {
            "header": {
                "stored": f"0x{h.checksum:08x}",
                "computed": f"0x{info.header_checksum_computed:08x}",
                "ok": h.checksum == info.header_checksum_computed,
            },
            "footer": {
                "stored": f"0x{info.footer_checksum:08x}",
                "computed": f"0x{info.footer_checksum_computed or 0:08x}",
                "ok": info.footer_checksum == info.footer_checksum_computed,
            },
        },
        "notes": info.notes,
        "metadata": info.metadata,
        "lm_head_tied": info.lm_head_tied,
        "tensors": rows,
    }


def _stats(arr: Any) -> dict[str, Any]:
    import numpy as np

    if arr.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    flat = arr.reshape(-1)
    return {
        "mean": float(np.mean(flat, dtype=np.float64)),
        "std": float(np.std(flat, dtype=np.float64)),
        "min": float(flat.min()),
        "max": float(flat.max()),
    }


def _printable(key: str) -> str:
    # A lone surrogate (JSON allows "\ud800"; UTF-8 cannot encode it) or a control character
    # would fail the print or break the line: such a key is shown as a JSON string, escaped.
    return key if key.isprintable() else json.dumps(key)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if not text.isprintable():
        text = json.dumps(value)  # all non-ASCII escaped: see _printable
    if isinstance(value, (list, dict)) and len(value) > 8:
        return f"<{type(value).__name__} of {len(value)}>"
    return text if len(text) <= 100 else text[:97] + "..."


def run_inspect(args: argparse.Namespace) -> int:
    data = inspection(args.file, stats=args.stats)
    if args.format == "json":
        # Strict JSON: ASCII escapes keep a lone surrogate in metadata printable, and a NaN or
        # infinite statistic (damaged data decodes to them) is its string ("nan"), not a bare token.
        print_json(data, ensure_ascii=True)
        return 0
    h, c = data["header"], data["checksums"]
    out = [
        f"{data['file']}: APR v{h['version']}, {data['file_size']} bytes, {h['tensor_count']} tensors",
        f"  flags           {h['flags']} ({', '.join(h['flag_names']) or 'none'})",
        (
            f"  sections        metadata {h['metadata_offset']} (+{h['metadata_size']}), "
            f"index {h['tensor_index_offset']}, data {h['data_offset']}"
        ),
        f"  header crc      {c['header']['stored']} ok",
        f"  footer crc      {c['footer']['stored']} ok",
    ]
    out += [f"  note            {note}" for note in data["notes"]]
    if data["lm_head_tied"]:
        out.append("  lm_head.weight  missing or 0-byte: tied to model.embed_tokens.weight")
    out.append("metadata:")
    for key, value in data["metadata"].items():
        out.append(f"  {_printable(key):<24} {_short(value)}")
    out.append("tensors:")
    width = max((len(r["name"]) for r in data["tensors"]), default=4)
    for r in data["tensors"]:
        line = (
            f"  {r['name']:<{width}}  {r['dtype']:<6} {r['shape']!s:<18} @{r['offset']:<12} {r['size']:>12} B"
        )
        if r.get("placeholder"):
            line += "  (0-byte placeholder)"
        elif "mean" in r and r["mean"] is not None:
            line += f"  mean {r['mean']:+.4g} std {r['std']:.4g} min {r['min']:+.4g} max {r['max']:+.4g}"
        out.append(line)
    print("\n".join(out))
    return 0


def run_diff(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from shiptwo.apr.diff import diff

    report = diff(args.file, args.source)
    if args.format == "json":
        # An infinite max_rel (a value against a 0 in the source) prints as "inf" (jsonout).
        print_json(
            {
                "ok": report.ok,
                "summary": report.summary(),
                "tensors": [asdict(t) for t in report.tensors],
            }
        )
    else:
        for t in report.tensors:
            if not t.ok:
                print(
                    f"  {t.name}: {t.status} max_abs={t.max_abs:.6g} max_rel={t.max_rel:.6g}"
                    + (f" ({t.note})" if t.note else "")
                )
        print(report.summary())
    return 0 if report.ok else 1
