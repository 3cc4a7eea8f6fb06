"""Markers, `tests:` lists and measurements are checked against the contracts."""

from __future__ import annotations

from typing import Any

import pytest


def add_test(demo: pytest.Pytester, source: str) -> None:
    path = demo.path / "falsifiers" / "test_extra.py"
    path.write_text("import pytest\n\n" + source)


def status_of(pv_json: Any, demo: pytest.Pytester, fid: str) -> dict[str, Any]:
    _, report = pv_json(demo.path)
    return next(f for c in report["contracts"] for f in c["falsifiers"] if f["id"] == fid)


def test_unknown_falsifier_id_fails_collection_with_did_you_mean(demo: pytest.Pytester) -> None:
    add_test(demo, '@pytest.mark.falsifier("FALSIFY-DEMO-PAS-001")\ndef test_typo():\n    pass\n')
    result = demo.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*falsifier markers and contracts disagree*",
            (
                "*test_extra.py::test_typo: falsifier 'FALSIFY-DEMO-PAS-001' is declared by no contract in "
                "contracts/; did you mean 'FALSIFY-DEMO-PASS-001'?"
            ),
        ]
    )


def test_marker_needs_exactly_one_id(demo: pytest.Pytester) -> None:
    add_test(demo, "@pytest.mark.falsifier\ndef test_bare():\n    pass\n")
    result = demo.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*test_bare: use @pytest.mark.falsifier('FALSIFY-<AREA>-<NNN>') with one id"]
    )


def _list_tests(demo: pytest.Pytester, fid: str, tests: list[str]) -> None:
    path = demo.path / "contracts" / "demo-v1.yaml"
    entry = "\n".join(f"      - {t}" for t in tests)
    path.write_text(path.read_text().replace(f"  - id: {fid}\n", f"  - id: {fid}\n    tests:\n{entry}\n"))


def test_tests_list_and_markers_must_agree_both_ways(demo: pytest.Pytester) -> None:
    # Listed but unmarked: test_plain exists but claims nothing.
    _list_tests(demo, "FALSIFY-DEMO-PASS-001", ["falsifiers/test_demo.py::test_plain"])
    result = demo.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            (
                "*falsifiers/test_demo.py::test_plain: listed in tests: of FALSIFY-DEMO-PASS-001 but carries "
                "no "
                "@pytest.mark.falsifier('FALSIFY-DEMO-PASS-001')"
            ),
            "*falsifiers/test_demo.py::test_pass: marked falsifier('FALSIFY-DEMO-PASS-001') but not listed "
            "in its contract's tests:",
        ]
    )


def test_agreeing_tests_list_collects(demo: pytest.Pytester) -> None:
    _list_tests(demo, "FALSIFY-DEMO-PASS-001", ["falsifiers/test_demo.py::test_pass"])
    demo.runpytest("-k", "test_pass").assert_outcomes(passed=1)


def test_measurement_outside_pass_range_refutes(demo: pytest.Pytester, pv_json: Any) -> None:
    add_test(
        demo,
        '@pytest.mark.falsifier("FALSIFY-DEMO-PASS-001")\ndef test_high(record_measurement):\n'
        '    record_measurement("loss", 12.5)\n',
    )
    result = demo.runpytest("-k", "test_high")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*FALSIFY-DEMO-PASS-001: loss = 12.5 nats is outside the pass range ?-inf, 9.38? (from "
            "contracts/demo-v1.yaml: measurements.loss.pass)*"
        ]
    )
    assert status_of(pv_json, demo, "FALSIFY-DEMO-PASS-001")["status"] == "FALSIFIED"


def test_nan_measurement_refutes(demo: pytest.Pytester, pv_json: Any) -> None:
    add_test(
        demo,
        '@pytest.mark.falsifier("FALSIFY-DEMO-PASS-001")\ndef test_nan(record_measurement):\n'
        '    record_measurement("loss", float("nan"))\n',
    )
    demo.runpytest("-k", "test_nan").assert_outcomes(failed=1)
    assert status_of(pv_json, demo, "FALSIFY-DEMO-PASS-001")["status"] == "FALSIFIED"


def test_undeclared_measurement_is_a_harness_error(demo: pytest.Pytester, pv_json: Any) -> None:
    add_test(
        demo,
        '@pytest.mark.falsifier("FALSIFY-DEMO-PASS-001")\ndef test_undeclared(record_measurement):\n'
        '    record_measurement("los", 2.0)\n',
    )
    result = demo.runpytest("-k", "test_undeclared")
    result.stdout.fnmatch_lines(
        [
            "*measurement 'los' is not declared by FALSIFY-DEMO-PASS-001 (declared: loss); did you mean "
            "'loss'?*"
        ]
    )
    verdict = status_of(pv_json, demo, "FALSIFY-DEMO-PASS-001")
    assert verdict["status"] == "ERROR"
    assert "not declared" in verdict["reason"]


def test_declared_measurement_never_recorded_is_reported(demo: pytest.Pytester, pv_json: Any) -> None:
    add_test(demo, '@pytest.mark.falsifier("FALSIFY-DEMO-PASS-001")\ndef test_silent():\n    pass\n')
    result = demo.runpytest("-k", "test_silent")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*declared measurement(s) never recorded by this passing test: FALSIFY-DEMO-PASS-001: loss*"]
    )
    assert status_of(pv_json, demo, "FALSIFY-DEMO-PASS-001")["status"] == "ERROR"


def test_non_number_measurement_is_a_harness_error(demo: pytest.Pytester) -> None:
    add_test(
        demo,
        '@pytest.mark.falsifier("FALSIFY-DEMO-PASS-001")\ndef test_text(record_measurement):\n'
        '    record_measurement("loss", "low")\n',
    )
    demo.runpytest("-k", "test_text").stdout.fnmatch_lines(["*measurement 'loss': 'low' is not a number*"])


def test_options_and_ini_share_help(demo: pytest.Pytester) -> None:
    result = demo.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "*shiptwo falsifier contracts:*",
            "*--shiptwo-contracts=DIR*",
            "*shiptwo_contracts (string):*",
        ]
    )


@pytest.mark.parametrize("value", ["float('inf')", "float('-inf')"])
def test_non_finite_measurement_refutes_even_inside_an_open_range(
    demo: pytest.Pytester, pv_json: Any, value: str
) -> None:
    path = demo.path / "contracts" / "demo-v1.yaml"
    path.write_text(
        path.read_text().replace(
            "pass: {max: 9.38}\n        plausible: {min: 1.5, max: 2.5}\n  - id: FALSIFY-DEMO-FAIL",
            "plausible: {min: 1.5}\n  - id: FALSIFY-DEMO-FAIL",
            1,
        )
    )
    add_test(
        demo,
        '@pytest.mark.falsifier("FALSIFY-DEMO-PASS-001")\ndef test_inf(record_measurement):\n    '
        f'record_measurement("loss", {value})\n',
    )
    result = demo.runpytest("-k", "test_inf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*FALSIFY-DEMO-PASS-001: loss = *inf is not a finite number*"])
    assert status_of(pv_json, demo, "FALSIFY-DEMO-PASS-001")["status"] == "FALSIFIED"


def test_falsifier_spec_exposes_the_contract_thresholds(demo: pytest.Pytester) -> None:
    add_test(
        demo,
        '@pytest.mark.falsifier("FALSIFY-DEMO-PASS-001")\ndef test_spec(record_measurement, '
        "falsifier_spec):\n"
        '    spec = falsifier_spec.measurements["loss"]\n'
        '    assert (spec.passing.max, spec.plausible.min, spec.unit) == (9.38, 1.5, "nats")\n'
        '    record_measurement("loss", 2.0)\n\n'
        "def test_unbound(falsifier_spec):\n    pass\n",
    )
    result = demo.runpytest("-k", "test_spec or test_unbound")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*test_unbound: falsifier_spec needs exactly one falsifier marker, found ?]*"]
    )
