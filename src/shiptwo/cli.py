"""The `shiptwo` command line.

Each command group lives beside the code it drives and registers itself through a
`register(subparsers)` function. Registration imports only argparse-level code, so
`shiptwo pv validate` never pays for torch or tokenizers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from shiptwo import __version__
from shiptwo.errors import ShiptwoError, UsageError

# Modules whose `register(subparsers)` adds commands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "shiptwo.harness.cli",
    "shiptwo.tokenize.cli",
    "shiptwo.apr.cli",
    "shiptwo.models.cli",
    "shiptwo.qwen2.cli",
)


# The third-party packages of the subject rooms, and the extra that installs each.
OPTIONAL_PACKAGES: dict[str, str] = {
    "torch": "qwen2",
    "numpy": "tokenize",
    "tokenizers": "tokenize",
    "tqdm": "tokenize",
    "safetensors": "apr",
    "matplotlib": "qwen2",
}


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main` owns every exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shiptwo", description="Falsifier-first contracts for shipping ML models.")
    parser.add_argument("--version", action="version", version=f"shiptwo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 1 findings/failure, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return 2
        code = int(func(args))
        # Flush here, not at interpreter exit: a reader that already left (`| head -1`) then
        # raises BrokenPipeError below instead of an "Exception ignored" message at shutdown.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Before OSError, which it is. The reader of stdout went away (`shiptwo ... | head -1`):
        # nothing is wrong and nobody is left to tell, so leave quietly. Exit status 1, as the
        # Python documentation's recipe (signal module, "Note on SIGPIPE") and pip do: a C tool
        # killed by SIGPIPE shows 141 (128 + 13), but Python ignores SIGPIPE and reports EPIPE as
        # this exception, and dying by the restored signal would skip our cleanup (temp files).
        _silence_stdout()
        return 1
    except UsageError as exc:
        _error(str(exc))
        return 2
    except ShiptwoError as exc:
        _error(str(exc))
        return 1
    except OSError as exc:
        # A backstop: commands turn the errors they expect into ShiptwoErrors with a fix;
        # anything the OS still refuses is reported in one line, not a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc}")
        return 1
    except ModuleNotFoundError as exc:
        # `pip install shiptwo` is the harness alone; a subject's command needs its extra.
        extra = OPTIONAL_PACKAGES.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"error: this command needs {exc.name}, which the '{extra}' extra installs: "
            f"pip install 'shiptwo[{extra}]' (or 'shiptwo[all]')",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _error(message: str) -> None:
    """Print `error: message` to stderr, with every control character in it made visible.

    Messages quote file names, YAML keys and tensor names, which may hold an ESC sequence or a
    bidi override. A newline stays a line break, since some errors list files line by line, but
    every line after the first is indented: only the first can start with `error:`, so a name
    holding a newline cannot forge a line of its own.
    """
    from shiptwo.harness.report import visible

    print("error: " + "\n  ".join(visible(line) for line in message.split("\n")), file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout's file descriptor at /dev/null, so the flush at exit has nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # ValueError: stdout is not a real file (pytest's capture)
        pass


if __name__ == "__main__":
    sys.exit(main())
