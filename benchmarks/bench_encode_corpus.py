"""Benchmark: `encode-corpus` end to end against bare `tokenizers` encode_batch on the same documents.

Corpus: real Python, the standard library sources of this interpreter, as JSONL. The peer is
`Tokenizer.encode_batch` over the documents already in memory (no reading, no JSON, no audit, no
writing); the subject is the whole command: hashing the inputs, reading and parsing JSONL,
encoding, EOS placement, the audit histogram and writing shards. Prints tokens/s for both and
their ratio (goal >= 0.9), and the ratio against `encode_batch_fast` (no offsets), which is what
encode-corpus itself calls. Needs the Qwen2 vocab (`shiptwo tokenize fetch-qwen2`) unless
--tokenizer names another byte-level tokenizer.json.

    python benchmarks/bench_encode_corpus.py [--max-files N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


def build_corpus(path: Path, max_files: int) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    for p in sorted(stdlib.rglob("*.py")):
        if "site-packages" in p.parts:
            continue
        try:
            texts.append(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
        if len(texts) == max_files:
            break
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"content": t}) + "\n" for t in texts)
    return texts


def main(argv: list[str] | None = None) -> int:
    from shiptwo.tokenize.corpus import encode_corpus
    from shiptwo.tokenize.qwen2 import find_qwen2_tokenizer_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--max-files", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--batch-chars", type=int, default=1 << 20, help="encode-corpus batch size in characters"
    )
    args = parser.parse_args(argv)
    tokenizer = args.tokenizer or find_qwen2_tokenizer_dir()
    if tokenizer is None:
        print("no Qwen2 vocab: run `shiptwo tokenize fetch-qwen2` or pass --tokenizer", file=sys.stderr)
        return 2
    tokenizer_json = tokenizer / "tokenizer.json" if tokenizer.is_dir() else tokenizer

    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "stdlib.jsonl"
        texts = build_corpus(corpus, args.max_files)
        mb = corpus.stat().st_size / 1e6
        print(f"corpus: {len(texts)} Python files, {mb:.1f} MB of JSONL ({corpus})")
        bare_tok = Tokenizer.from_file(str(tokenizer_json))
        # Best of R (timeit's rule: on a shared machine the minimum is the least disturbed run), in
        # wall time and in process CPU time (all threads): the CPU ratio shows the command's extra
        # work even when other processes steal cores.
        wall: dict[str, list[float]] = {"bare": [], "fast": [], "cmd": []}
        cpu: dict[str, list[float]] = {"bare": [], "fast": [], "cmd": []}
        bare_tokens = 0
        for r in range(args.repeats):
            for name in ("bare", "fast", "cmd"):
                w0, c0 = time.perf_counter(), time.process_time()
                if name == "bare":
                    encodings = bare_tok.encode_batch(texts, add_special_tokens=False)
                    bare_tokens = sum(len(e) for e in encodings)
                    del encodings
                elif name == "fast":
                    del_me = bare_tok.encode_batch_fast(texts, add_special_tokens=False)
                    del del_me
                else:
                    manifest = encode_corpus(
                        tokenizer,
                        [corpus],
                        Path(tmp) / f"out{r}",
                        eos_policy="none",
                        progress=False,
                        batch_chars=args.batch_chars,
                    )
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
            if manifest["total_tokens"] != bare_tokens:
                print(
                    f"token counts differ: command {manifest['total_tokens']}, bare {bare_tokens}",
                    file=sys.stderr,
                )
                return 1
            print(
                f"run {r}: wall s bare {wall['bare'][-1]:.2f}, fast {wall['fast'][-1]:.2f}, "
                f"encode-corpus {wall['cmd'][-1]:.2f}; {bare_tokens:,} tokens"
            )
        best = {k: min(v) for k, v in wall.items()}
        best_cpu = {k: min(v) for k, v in cpu.items()}
        rate = {k: bare_tokens / v for k, v in best.items()}
        print(f"bare tokenizers encode_batch: {rate['bare']:,.0f} tokens/s (best of {args.repeats})")
        print(
            f"bare encode_batch_fast:       {rate['fast']:,.0f} tokens/s "
            "(no offsets; what encode-corpus calls)"
        )
        print(
            f"shiptwo encode-corpus:        {rate['cmd']:,.0f} tokens/s "
            "(hash, read, parse, encode, audit, write)"
        )
        print(
            f"ratio encode-corpus / bare encode_batch:      {rate['cmd'] / rate['bare']:.2f}x wall, "
            f"{best_cpu['bare'] / best_cpu['cmd']:.2f}x CPU time  (goal >= 0.90)"
        )
        print(
            f"ratio encode-corpus / bare encode_batch_fast: {rate['cmd'] / rate['fast']:.2f}x wall, "
            f"{best_cpu['fast'] / best_cpu['cmd']:.2f}x CPU time"
        )
        audit = manifest["audit"]
        print(
            f"audit: unk {audit['unk_ratio']:.4%}, entropy {audit['entropy_bits']:.2f} bits of "
            f"{audit['max_entropy_bits']:.2f}, {audit['distinct_tokens']:,} distinct tokens"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
