"""The one error boundary of every command line: a failure prints one line naming the file and the cause and
exits 2; `--verbose` shows the traceback instead; Ctrl-C stops with one line and exit 130."""

from __future__ import annotations

import errno
import functools
import json
import sys
from collections.abc import Callable

Main = Callable[[list[str] | None], int]
VERBOSE = "--verbose"


def describe(error: BaseException) -> str:
    """One line for an error: the file and the cause where the error knows them, never a traceback."""
    if isinstance(error, OSError) and error.filename is not None:
        cause = "no space left on the device" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        target = f" -> {error.filename2}" if error.filename2 else ""
        return f"{error.filename}{target}: {cause}"
    if isinstance(error, UnicodeDecodeError):
        return (f"not UTF-8 text: byte 0x{error.object[error.start]:02x} at position {error.start} "
                "(save the file as UTF-8)")
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
    if isinstance(error, KeyError) and type(error) is KeyError:
        return f"missing key {error.args[0]!r}" if error.args else "missing key"
    if isinstance(error, MemoryError):
        return "out of memory"
    text = str(error).strip().splitlines()
    name = type(error).__name__
    known = ("DataError", "ConfigError", "UnknownName", "RunLocked", "KaggleBuildError", "ValueError")
    return (text[0] if name in known else f"{name}: {text[0]}") if text else name


def boundary(main: Main | None = None, *, takes_verbose: bool = False) -> Main | Callable[[Main], Main]:
    """Wrap a command line's `main(argv) -> exit code` in the error boundary.

    Every command line accepts `--verbose` for the traceback; `takes_verbose` says that `main` declares the flag
    itself (it is then passed on), otherwise the boundary removes it before `main` parses its arguments.
    """
    def wrap(fn: Main) -> Main:
        @functools.wraps(fn)
        def guarded(argv: list[str] | None = None) -> int:
            args = list(sys.argv[1:] if argv is None else argv)
            verbose = VERBOSE in args
            try:
                return fn(args if takes_verbose else [a for a in args if a != VERBOSE])
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)
                return 130
            except Exception as e:
                if verbose:
                    raise
                print(f"error: {describe(e)}", file=sys.stderr)
                return 2
        return guarded
    return wrap(main) if main is not None else wrap
