"""`shiptwo pv ...`: validate contracts, compute statuses from evidence, write them back."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shiptwo.harness.contract.findings import Finding
    from shiptwo.harness.evaluate import Evaluation


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pv = subparsers.add_parser(
        "pv", help="validate contracts and their falsifiers' status (proof verification)"
    )
    pv_sub = pv.add_subparsers(dest="pv_command", metavar="COMMAND", parser_class=type(pv))
    pv.set_defaults(func=lambda args: _help(pv))

    validate = pv_sub.add_parser(
        "validate",
        help="validate contracts and report each falsifier's status from run evidence",
        description="Validate contracts, then compute every falsifier's status from the run records. "
        "Exit 0: valid and nothing falsified; 1: error findings, a FALSIFIED or VACUOUS falsifier or a "
        "failed --check; "
        "2: usage error or nothing to check.",
    )
    _common(validate)
    validate.add_argument(
        "--format",
        choices=("text", "json", "github", "sarif", "markdown"),
        default="text",
        help="output format (sarif: SARIF 2.1.0 for code scanning; markdown: a GitHub job summary)",
    )
    validate.add_argument(
        "--strict",
        action="store_true",
        help="treat every warning as an error (e.g. PV701: a falsifier without controls)",
    )
    mode = validate.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write status and evidence back into the YAML")
    mode.add_argument(
        "--check", action="store_true", help="fail when the YAML's statuses differ from the evidence"
    )
    validate.add_argument(
        "-q", "--quiet", action="store_true", help="text format: findings and the summary only"
    )
    validate.set_defaults(func=_validate)

    status = pv_sub.add_parser("status", help="table of every contract and falsifier: declared vs discharged")
    _common(status)
    status.add_argument("--format", choices=("text", "json"), default="text")
    status.set_defaults(func=_status)

    prune = pv_sub.add_parser(
        "prune",
        help="delete run records that decide no current status",
        description="Delete every run record that no current status relies on; `pv validate` computes "
        "the same statuses afterwards. Exit 0: pruned (or nothing to prune); 2: usage error, or error "
        "findings in the contracts or run records (nothing is deleted then).",
    )
    _common(prune)
    prune.add_argument(
        "--keep", type=int, default=0, metavar="N", help="also keep the N newest records (default: 0)"
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed; delete nothing")
    prune.add_argument("--format", choices=("text", "json"), default="text")
    prune.set_defaults(func=_prune)

    report = pv_sub.add_parser(
        "report",
        help="write a static HTML page of contracts, statuses, controls and measurement history",
        description="Write DIR/index.html: every contract and falsifier with its status and controls, "
        "and each measurement's history across the run records against its pass and plausible bands. "
        "Exit 0 when written, whatever the statuses (`pv validate` is the gate); 2: usage error.",
    )
    _common(report)
    report.add_argument(
        "-o", "--output", type=Path, required=True, metavar="DIR", help="directory to write index.html into"
    )
    report.add_argument("--format", choices=("text", "json"), default="text")
    report.set_defaults(func=_report)

    rules = pv_sub.add_parser("rules", help="print the catalog of validation rules")
    rules.add_argument("--format", choices=("text", "json"), default="text")
    rules.set_defaults(func=_rules)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="contract files or directories (default: [tool.shiptwo] contracts, else contracts/)",
    )
    p.add_argument(
        "--evidence",
        type=Path,
        action="append",
        metavar="DIR",
        help="run records directory (repeatable: several are one body of evidence, e.g. the committed "
        "records and a GPU host's downloaded ones; default: [tool.shiptwo] evidence, else "
        "<root>/evidence/runs)",
    )
    p.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        help="project root for `tests:` entries (default: found from PATH)",
    )
    p.add_argument(
        "--tests-dir",
        type=Path,
        action="append",
        metavar="DIR",
        help="directory scanned for falsifier markers (repeatable; default: [tool.shiptwo] tests, "
        "else pytest's testpaths, else <root>/falsifiers)",
    )


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _evaluate(args: argparse.Namespace) -> Evaluation:
    """Validate the contracts and compute statuses, with paths from the flags or [tool.shiptwo]."""
    from shiptwo.errors import UsageError
    from shiptwo.harness.config import find_root, load_config
    from shiptwo.harness.contract.validate import validate_paths
    from shiptwo.harness.evaluate import evaluate

    root = (args.root or find_root(args.paths[0] if args.paths else Path.cwd())).resolve()
    project = load_config(root)
    if project.gates:
        from shiptwo.harness.gates import register_project_gates

        try:
            register_project_gates(project.gates, root)
        except ValueError as exc:
            raise UsageError(f"{project.source}: {exc}") from None
    paths = args.paths or [project.contracts]
    if not args.paths and not project.contracts.is_dir():
        where = f"[tool.shiptwo] contracts in {project.source}" if project.source else "the default"
        raise UsageError(
            f"no PATH given and {project.contracts} ({where}) does not exist; pass the contracts directory"
        )
    test_dirs = args.tests_dir if args.tests_dir is not None else list(project.tests)
    result = validate_paths(paths, root=root, test_dirs=test_dirs)
    if not result.contracts and not result.findings:
        raise UsageError(f"nothing to check: no shiptwo.contract/v1 YAML under {', '.join(map(str, paths))}")
    for directory in args.evidence or ():
        if not directory.is_dir():
            raise UsageError(f"--evidence {directory}: not a directory of run records")
    return evaluate(result, args.evidence or [project.evidence])


def _validate(args: argparse.Namespace) -> int:
    from shiptwo.harness import report
    from shiptwo.harness.contract.findings import has_errors
    from shiptwo.harness.evaluate import standing_status
    from shiptwo.harness.status import Status
    from shiptwo.harness.writeback import write_statuses

    ev = _evaluate(args)
    if args.strict:
        ev.validation.findings = [_as_error(f) for f in ev.validation.findings]
        ev.evidence_findings = [_as_error(f) for f in ev.evidence_findings]
    # An unreadable run record might be the newest word on some falsifier: never write around it.
    blocked = has_errors(ev.findings)
    if args.write and not blocked:
        changed = write_statuses(ev, log=lambda line: print(line, file=sys.stderr))
        for path in changed:
            print(f"wrote {report.visible(path)}", file=sys.stderr)
    elif args.write:
        print(
            "error: not writing statuses while there are error findings (contracts or run records)",
            file=sys.stderr,
        )
    if args.check:
        ev.evidence_findings.extend(_check_findings(ev))
    if args.format == "json":
        print(report.render_json(ev))
    elif args.format == "github":
        print(report.render_github(ev))
    elif args.format == "sarif":
        from shiptwo.harness.sarif import render_sarif

        print(render_sarif(ev))
    elif args.format == "markdown":
        from shiptwo.harness.markdown import render_markdown

        print(render_markdown(ev))
    else:
        print(report.render_text(ev, verbose=not args.quiet))
    # With --check, a written status the evidence here cannot judge stands: FALSIFIED still fails.
    falsified = any(
        (standing_status(ev, f) if args.check else f.verdict.status) in (Status.FALSIFIED, Status.VACUOUS)
        for c in ev.contracts
        for f in c.falsifiers
    )
    failed_write = args.write and blocked
    return 1 if has_errors(ev.findings) or falsified or failed_write else 0


def _as_error(f: Finding) -> Finding:
    """`f` with error severity (--strict)."""
    import dataclasses

    from shiptwo.harness.contract.rules import Severity

    return dataclasses.replace(f, severity=Severity.ERROR)


def _check_findings(ev: Evaluation) -> list[Finding]:
    """PV602 for every status written in the YAML that the evidence does not support.

    A written status whose run record is absent and that no record here mentions cannot be
    judged (a clone without the records): PV604, a warning, and the contract's status is
    checked as if that falsifier's written status stood.
    """
    from shiptwo.fileio import display_path
    from shiptwo.harness.contract.findings import finding
    from shiptwo.harness.contract.yamlsafe import parse_yaml
    from shiptwo.harness.evaluate import absent_run, standing_status
    from shiptwo.harness.status import contract_status

    out: list[Finding] = []
    fix = "run `shiptwo pv validate --write`"
    for c in ev.contracts:
        rel = display_path(c.contract.path, ev.validation.root)
        parsed = parse_yaml(c.contract.path.read_bytes())
        standing = []  # each falsifier's status as the check judges it
        for i, f in enumerate(c.falsifiers):
            standing.append(standing_status(ev, f))
            if f.falsifier.status == f.verdict.status.value:
                continue
            line, col = parsed.position(("falsifiers", i, "status"))
            run = absent_run(ev, f)
            if run is not None and standing[-1] != f.verdict.status:
                out.append(
                    finding(
                        "evidence-absent",
                        rel,
                        line,
                        col,
                        f"{f.falsifier.id}: YAML says {f.falsifier.status} from run {run}, which is in no "
                        "evidence directory, and no record here mentions it; not checked: commit the record "
                        "or pass its directory with --evidence",
                    )
                )
                continue
            out.append(
                finding(
                    "status-out-of-date",
                    rel,
                    line,
                    col,
                    f"{f.falsifier.id}: YAML says {f.falsifier.status or 'nothing'}, evidence says "
                    f"{f.verdict.status.value}; {fix}",
                )
            )
        expected = contract_status(standing)
        if c.contract.status != expected.value:
            line, col = parsed.position(("status",))
            out.append(
                finding(
                    "status-out-of-date",
                    rel,
                    line,
                    col,
                    f"status: YAML says {c.contract.status or 'nothing'}, evidence says {expected.value}; "
                    f"{fix}",
                )
            )
    return sorted(out)


def _status(args: argparse.Namespace) -> int:
    from shiptwo import jsonout
    from shiptwo.harness import report

    ev = _evaluate(args)
    if args.format == "json":
        print(jsonout.dumps(report.to_json(ev)["contracts"], indent=2))
        return 0
    rows = [("CONTRACT / FALSIFIER", "DECLARED", "EVIDENCE", "CONTROLS REFUTED", "REQUIRES")]
    for c in ev.contracts:
        declared = sum(len(f.verdict.controls) for f in c.falsifiers)
        refuted = sum(f.verdict.refuted for f in c.falsifiers)
        rows.append(
            (
                c.contract.id,
                c.contract.status or "-",
                c.status.value,
                f"{refuted}/{declared}",
                ",".join(c.contract.requires) or "-",
            )
        )
        for f in c.falsifiers:
            controls = f"{f.verdict.refuted}/{len(f.verdict.controls)}" if f.verdict.controls else "none"
            rows.append(
                (
                    "  " + f.falsifier.id,
                    f.falsifier.status or "-",
                    f.verdict.status.value,
                    controls,
                    ",".join(f.falsifier.requires) or "-",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    print(report.summary_line(ev))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from shiptwo import jsonout
    from shiptwo.errors import UsageError
    from shiptwo.fileio import display_path
    from shiptwo.harness.prune import plan_prune, remove_records

    if args.keep < 0:
        raise UsageError(f"--keep {args.keep}: not a count of records; give 0 or more")
    ev = _evaluate(args)
    plan = plan_prune(ev, keep_newest=args.keep, keep_foreign=bool(args.paths))
    gone = [r.path for r in plan.removed] if args.dry_run else remove_records(plan)
    root = ev.validation.root
    if args.format == "json":
        out = {
            "dry_run": args.dry_run,
            "removed": [display_path(p, root) for p in gone],
            "kept": [
                {
                    "path": display_path(k.record.path, root),
                    "run": k.record.run_id,
                    "reason": k.reason,
                    "falsifiers": list(k.falsifiers),
                }
                for k in plan.kept
            ],
        }
        print(jsonout.dumps(out, indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for path in gone:
        print(f"{verb} {display_path(path, root)}")
    for k in plan.kept:
        print(f"kept {display_path(k.record.path, root)}: {k.reason}")
    print(f"{verb} {len(gone)} of {len(gone) + len(plan.kept)} run records; kept {len(plan.kept)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from shiptwo import jsonout
    from shiptwo.fileio import check_output_dir
    from shiptwo.harness.htmlreport import write_report

    out = check_output_dir("-o", args.output)
    ev = _evaluate(args)
    written = write_report(out, ev)
    print(jsonout.dumps(written, indent=2) if args.format == "json" else written["report"])
    return 0


def _rules(args: argparse.Namespace) -> int:
    from shiptwo import jsonout
    from shiptwo.harness.contract.rules import BY_CODE

    if args.format == "json":
        print(
            jsonout.dumps(
                [
                    {"code": r.code, "name": r.name, "severity": r.severity.value, "summary": r.summary}
                    for r in BY_CODE.values()
                ],
                indent=2,
            )
        )
        return 0
    for r in BY_CODE.values():
        print(f"{r.code}  {r.name:<26} {r.severity.value:<8} {r.summary}")
    return 0
