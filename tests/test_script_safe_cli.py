"""The CLI as scripts use it: quiet on a closed pipe, strict JSON, one cache directory."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shiptwo import cli
from shiptwo.fileio import CACHE_ENV, cache_dir
from shiptwo.jsonout import dumps, finite_json


def test_a_reader_that_left_gets_silence_and_exit_1() -> None:
    """`shiptwo pv rules | head -0`: the pipe's read end is closed before shiptwo writes a byte."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed first, so every write fails with EPIPE: no race with the child
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "shiptwo", "pv", "rules"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            check=False,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == b""  # neither "error: Broken pipe" nor "Exception ignored ..."
    assert proc.returncode == 1


def test_broken_pipe_inside_a_command_is_not_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def writes_to_a_closed_pipe(args: argparse.Namespace) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    parser = cli.build_parser()
    parser.set_defaults(func=writes_to_a_closed_pipe)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 1
    assert capsys.readouterr().err == ""


def test_json_output_maps_non_finite_floats_to_strings() -> None:
    value = {"a": math.inf, "b": [-math.inf, math.nan, 1.5], "c": (None, {"d": float("nan")}), "e": 2}
    text = dumps(value)
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in {text}"))
    assert doc == {"a": "inf", "b": ["-inf", "nan", 1.5], "c": [None, {"d": "nan"}], "e": 2}
    assert finite_json(1.25) == 1.25 and finite_json("inf") == "inf"


def test_json_output_maps_numpy_floats_too() -> None:
    np = pytest.importorskip("numpy")
    assert json.loads(dumps({"x": np.float64("inf"), "y": np.float64(0.5)})) == {"x": "inf", "y": 0.5}


def test_cache_dir_prefers_shiptwo_then_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "shiptwo"  # the existing default
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert cache_dir() == tmp_path / "home" / ".cache" / "shiptwo"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "shiptwo"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_every_cache_user_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    from shiptwo.models.fetch import model_root
    from shiptwo.models.registry import DEFAULT_QWEN2, pinned
    from shiptwo.tokenize.qwen2 import DIR_NAME, TOKENIZER_ENV, find_qwen2_tokenizer_dir

    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv(TOKENIZER_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_root(pinned(DEFAULT_QWEN2)) == tmp_path / "xdg" / "shiptwo" / "models" / DEFAULT_QWEN2
    built = tmp_path / "xdg" / "shiptwo" / DIR_NAME
    built.mkdir(parents=True)
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (built / name).write_text("")
    assert find_qwen2_tokenizer_dir() == built


def test_an_error_shows_control_characters_in_a_name_as_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file name can carry a terminal escape (clear the screen) or a bidi override.
    name = tmp_path / "model\x1b[2J\u202egpj.apr"
    assert cli.main(["apr", "inspect", str(name)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "model\\x1b[2J\\u202egpj.apr" in err
    assert "\x1b" not in err and "\u202e" not in err


def test_a_newline_in_a_name_cannot_forge_an_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = tmp_path / "nope\nerror: all contracts DISCHARGED"
    assert cli.main(["apr", "inspect", str(name)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ")
    assert lines[1] == "  error: all contracts DISCHARGED: cannot open: No such file or directory"
