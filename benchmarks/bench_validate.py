"""Benchmark `validate_paths` against merely parsing the same YAML with PyYAML's C loader.

Generates N realistic contracts (copies of the shipped ones with renamed ids, stems and
falsifier ids, each `tests:` entry pointing at a generated test file that carries the marker),
then times, in one run and best of R interleaved repeats:

  parse     read every file and `yaml.load(text, Loader=yaml.CSafeLoader)`, as a script would
            (the goal's peer), and again with the cyclic collector off, as validate runs
  validate  `validate_paths` on the same directory (schema, cross references, `tests:` via ast)

and prints validate/parse against both and contracts per second. Every validate run starts with
an empty test-file cache and parses the generated test files, as a fresh `shiptwo pv validate`
process does (a long-lived process would find them cached).

    .venv/bin/python benchmarks/bench_validate.py [--sizes 1000,10000] [--repeats 3] [--profile]
        [--format json]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

from shiptwo.harness.contract.testrefs import unparametrized
from shiptwo.harness.contract.validate import gc_paused, validate_paths

REPO = Path(__file__).resolve().parents[1]
FALSIFIER_ID = re.compile(r"FALSIFY-([A-Z0-9]+(?:-[A-Z0-9]+)*)-(\d{3})\b")
TEST_REF = re.compile(r"falsifiers/(\w+)\.py::")
GOAL = 1.5  # validate within 1.5x of the bare C parse (issue 13)


def make_project(root: Path, count: int) -> list[Path]:
    """Write `count` contracts and the test files their `tests:` entries name under `root`."""
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    contracts, tests = root / "contracts", root / "falsifiers" / "gen"
    contracts.mkdir()
    tests.mkdir(parents=True)
    sources = sorted((REPO / "contracts").glob("*.yaml"))
    written: list[Path] = []
    documents: list[dict] = []  # type: ignore[type-arg]
    for i in range(count):
        source, copy = sources[i % len(sources)], i // len(sources)
        stem = f"{source.stem}-c{copy}"
        text = source.read_text("utf-8")
        text = re.sub(rf"^id: {re.escape(source.stem)}\s*$", f"id: {stem}", text, count=1, flags=re.MULTILINE)
        text = FALSIFIER_ID.sub(rf"FALSIFY-\1-C{copy}-\2", text)
        text = TEST_REF.sub(rf"falsifiers/gen/\1_c{copy}.py::", text)
        path = contracts / f"{stem}.yaml"
        path.write_text(text, "utf-8")
        written.append(path)
        data = yaml.safe_load(text)
        documents.append(data)
        _write_covered_files(root, data)
    _write_marked_tests(root, documents)  # at the end: one test file may serve several contracts
    return written


def _write_covered_files(root: Path, data: dict) -> None:  # type: ignore[type-arg]
    """An empty file for every `covers:` entry (a glob gets one match), so PV703 stays quiet."""
    for falsifier in data["falsifiers"]:
        for entry in falsifier.get("covers") or ():
            path = root / entry.replace("**/", "").replace("*", "x")
            if "." not in path.name:  # a directory: one file in it
                path = path / "x.py"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()


def _write_marked_tests(root: Path, documents: list[dict]) -> None:  # type: ignore[type-arg]
    """Stub tests carrying the markers the contracts' `tests:` entries expect."""
    files: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for falsifier in (f for data in documents for f in data["falsifiers"]):
        for entry in falsifier.get("tests") or ():
            file, node = entry.split("::", 1)
            files[file][unparametrized(node)].add(falsifier["id"])
    for file, nodes in files.items():
        lines = ["import pytest", ""]
        classes: dict[str, list[tuple[str, set[str]]]] = defaultdict(list)
        for node, ids in sorted(nodes.items()):
            if "::" in node:
                cls, name = node.split("::")
                classes[cls].append((name, ids))
                continue
            lines += [
                "",
                *(f'@pytest.mark.falsifier("{fid}")' for fid in sorted(ids)),
                f"def {node}():",
                "    pass",
                "",
            ]
        for cls, methods in classes.items():
            lines += ["", f"class {cls}:"]
            for name, ids in methods:
                lines += [
                    *(f'    @pytest.mark.falsifier("{fid}")' for fid in sorted(ids)),
                    f"    def {name}(self):",
                    "        pass",
                    "",
                ]
        (root / file).write_text("\n".join(lines) + "\n")


def parse_only(paths: list[Path]) -> int:
    n = 0
    for path in paths:
        yaml.load(path.read_text("utf-8"), Loader=yaml.CSafeLoader)
        n += 1
    return n


def timed(fn, *args) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall, cpu) seconds of one call. CPU time is what the comparison uses: this machine is
    shared, and waiting for a core is not work either side did."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(count: int, repeats: int, profile: bool) -> dict[str, float]:
    """Best-of-`repeats` CPU and wall seconds of parse and validate over `count` generated contracts."""
    with tempfile.TemporaryDirectory(prefix="shiptwo-bench-") as tmp:
        root = Path(tmp)
        paths = make_project(root, count)
        contracts_dir = root / "contracts"
        size = sum(p.stat().st_size for p in paths)

        result = validate_paths([contracts_dir], root=root)  # also the correctness check
        if result.findings or len(result.contracts) != count:
            for f in result.findings[:20]:
                print(f"{f.path}:{f.line}: {f.rule} {f.message}", file=sys.stderr)
            raise SystemExit(f"generated contracts do not validate clean: {len(result.findings)} findings")
        del result
        gc.collect()  # no live heap left from the check: the collector would charge the parse for it
        from shiptwo.harness.contract import testrefs

        testrefs._scan.cache_clear()
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            validate_paths([contracts_dir], root=root)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)

        # Interleaved, so a busy neighbour slows both sides alike.
        parse_runs, parse_nogc_runs, validate_runs = [], [], []
        for _ in range(repeats):
            parse_runs.append(timed(parse_only, paths))
            with gc_paused():  # the stricter peer: the parse under validate's own GC regime
                parse_nogc_runs.append(timed(parse_only, paths))
            testrefs._scan.cache_clear()  # every run parses the test files, as a fresh `pv validate` does
            validate_runs.append(timed(validate_paths, [contracts_dir]))
    return {
        "contracts": count,
        "mb": size / 1e6,
        "parse_cpu_s": min(r[1] for r in parse_runs),
        "parse_wall_s": min(r[0] for r in parse_runs),
        "parse_nogc_cpu_s": min(r[1] for r in parse_nogc_runs),
        "validate_cpu_s": min(r[1] for r in validate_runs),
        "validate_wall_s": min(r[0] for r in validate_runs),
    }


def _slope(rows: list[dict[str, float]], key: str) -> float:
    """The marginal cost per contract between the smallest and largest size, against the average
    cost at the smallest (1.0 = perfectly linear)."""
    a, b = rows[0], rows[-1]
    marginal = (b[key] - a[key]) / (b["contracts"] - a["contracts"])
    return marginal / (a[key] / a["contracts"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated contract counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one validate run")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    if not yaml.__with_libyaml__:
        print("PyYAML was built without libyaml: the CSafeLoader peer is missing", file=sys.stderr)
        return 2
    sizes = [int(n) for n in args.sizes.split(",")]
    rows = [measure(n, args.repeats, args.profile) for n in sizes]
    for row in rows:
        row["ratio_cpu"] = row["validate_cpu_s"] / row["parse_cpu_s"]
        row["ratio_wall"] = row["validate_wall_s"] / row["parse_wall_s"]
        row["ratio_cpu_vs_nogc_parse"] = row["validate_cpu_s"] / row["parse_nogc_cpu_s"]
        row["us_per_contract"] = row["validate_cpu_s"] / row["contracts"] * 1e6
    # Linear in the number of files: the marginal cost per contract between the sizes.
    # The bare parse's own slope is printed beside it: what the machine (page cache, memory)
    # adds at the larger size is in both.
    slope = parse_slope = None
    if len(rows) > 1:
        slope, parse_slope = _slope(rows, "validate_cpu_s"), _slope(rows, "parse_cpu_s")
    if args.format == "json":
        print(
            json.dumps(
                {
                    "sizes": rows,
                    "slope_vs_linear": slope,
                    "parse_slope_vs_linear": parse_slope,
                    "goal_ratio": GOAL,
                },
                indent=2,
            )
        )
        return 0
    for row in rows:
        print(
            f"{row['contracts']:>6} contracts ({row['mb']:.1f} MB): "
            f"parse {row['parse_cpu_s'] * 1e3:8.1f} ms cpu, "
            f"validate {row['validate_cpu_s'] * 1e3:8.1f} ms cpu; "
            f"validate/parse {row['ratio_cpu']:.2f}x cpu, "
            f"{row['ratio_wall']:.2f}x wall (goal <= {GOAL}x); against the parse with the collector "
            f"off too {row['ratio_cpu_vs_nogc_parse']:.2f}x; {row['us_per_contract']:.0f} us/contract"
        )
    if slope is not None:
        print(
            f"marginal cost per contract {sizes[0]}->{sizes[-1]}: {slope:.2f}x the average at "
            f"{sizes[0]} (1.0 = linear); the bare parse's: {parse_slope:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
