"""Benchmark `validate_paths` against merely parsing the same YAML with PyYAML's C loader.

Generates N realistic contracts (copies of the shipped ones with renamed ids, stems and
falsifier ids, each `tests:` entry pointing at a generated test file that carries the marker),
then times, in one run and best of R interleaved repeats:

  parse     read every file and `yaml.load(text, Loader=yaml.CSafeLoader)`
  validate  `validate_paths` on the same directory (schema, cross references, `tests:` via ast)

and prints validate/parse and contracts per second. The first validate run is reported apart:
it also pays for parsing the generated test files, which later runs find in the scan cache.

    .venv/bin/python benchmarks/bench_validate.py [--contracts 1000] [--repeats 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

from shiptwo.harness.contract.testrefs import unparametrized
from shiptwo.harness.contract.validate import validate_paths

REPO = Path(__file__).resolve().parents[1]
FALSIFIER_ID = re.compile(r"FALSIFY-([A-Z0-9]+(?:-[A-Z0-9]+)*)-(\d{3})\b")
TEST_REF = re.compile(r"falsifiers/(\w+)\.py::")


def make_project(root: Path, count: int) -> list[Path]:
    """Write `count` contracts and the test files their `tests:` entries name under `root`."""
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")
    contracts, tests = root / "contracts", root / "falsifiers" / "gen"
    contracts.mkdir()
    tests.mkdir(parents=True)
    sources = sorted((REPO / "contracts").glob("*.yaml"))
    written = []
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
        _write_marked_tests(root, yaml.safe_load(text))
    return written


def _write_marked_tests(root: Path, data: dict) -> None:  # type: ignore[type-arg]
    """Stub tests carrying the markers the contract's `tests:` entries expect."""
    files: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for falsifier in data["falsifiers"]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contracts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one validate run")
    args = parser.parse_args(argv)
    if not yaml.__with_libyaml__:
        print("PyYAML was built without libyaml: the CSafeLoader peer is missing", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="shiptwo-bench-") as tmp:
        root = Path(tmp)
        paths = make_project(root, args.contracts)
        contracts_dir = root / "contracts"
        falsifiers = sum(len(yaml.safe_load(p.read_text())["falsifiers"]) for p in paths)
        size = sum(p.stat().st_size for p in paths)

        result = validate_paths([contracts_dir], root=root)  # also the correctness check
        if result.findings or len(result.contracts) != args.contracts:
            for f in result.findings[:20]:
                print(f"{f.path}:{f.line}: {f.rule} {f.message}", file=sys.stderr)
            print(
                f"generated contracts do not validate clean: {len(result.findings)} findings", file=sys.stderr
            )
            return 1
        from shiptwo.harness.contract import testrefs

        testrefs._scan.cache_clear()  # the first timed run pays for the test files, like a fresh CLI

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            validate_paths([contracts_dir], root=root)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            testrefs._scan.cache_clear()

        # Interleaved, so a busy neighbour slows both sides alike.
        parse_runs, validate_runs = [], []
        for _ in range(args.repeats):
            parse_runs.append(timed(parse_only, paths))
            validate_runs.append(timed(validate_paths, [contracts_dir]))

    parse_wall, parse_cpu = (min(r[i] for r in parse_runs) for i in (0, 1))
    validate_wall, validate_cpu = (min(r[i] for r in validate_runs) for i in (0, 1))
    first_cpu = validate_runs[0][1]
    print(
        f"{args.contracts} contracts, {falsifiers} falsifiers, {size / 1e6:.1f} MB of YAML; best of "
        f"{args.repeats}"
    )
    print(
        f"parse     (read + yaml.load CSafeLoader): {parse_cpu * 1e3:8.1f} ms cpu  {parse_wall * 1e3:8.1f} "
        "ms wall"
    )
    print(
        f"validate  (validate_paths), best        : {validate_cpu * 1e3:8.1f} ms cpu  "
        f"{validate_wall * 1e3:8.1f} ms wall"
    )
    print(
        f"validate  (validate_paths), first run   : {first_cpu * 1e3:8.1f} ms cpu  (parses the test files "
        "too)"
    )
    print(
        f"ratio validate/parse: {validate_cpu / parse_cpu:.2f}x cpu, {validate_wall / parse_wall:.2f}x wall "
        f"(first run {first_cpu / parse_cpu:.2f}x; goal <= 3x); "
        f"{args.contracts / validate_cpu:,.0f} contracts/s validated, {args.contracts / parse_cpu:,.0f} "
        "contracts/s parsed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
