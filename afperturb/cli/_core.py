"""The command registry, the parser, and the error → exit-code policy of the CLI.

Exit codes (documented in docs/cli.md and ``afperturb --help``):

====  =====================================================================================
0     success
1     a check or verdict failed (``templates check`` found problems; ``demo`` missed a
      planted motive)
2     usage, design or configuration error (bad flag, unknown preset/axis/level, bad TOML)
3     backend or store error (an API failed, the store is missing or unreadable, disk I/O)
4     internal error: a bug in afperturb (``AFPERTURB_DEBUG=1`` shows the traceback)
130   interrupted (Ctrl-C)
====  =====================================================================================
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from afperturb.errors import AfperturbError, BackendError, StoreError

Runner = Callable[[argparse.Namespace], int]
Configure = Callable[[argparse.ArgumentParser], None]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_BACKEND = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    success
  {EXIT_CHECK_FAILED}    a check or verdict failed (templates check, demo missed a planted motive)
  {EXIT_USAGE}    usage, design or configuration error (bad flag, preset, axis, TOML)
  {EXIT_BACKEND}    backend or store error (API failure, missing/unreadable store, disk I/O)
  {EXIT_INTERNAL}    internal error (a bug; AFPERTURB_DEBUG=1 shows the traceback)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
"""


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, argument setup and runner."""

    name: str
    help: str
    configure: Configure
    run: Runner
    epilog: str = ""


#: Every subcommand, by name, in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str, configure: Configure | None = None, epilog: str = ""
) -> Callable[[Runner], Runner]:
    """Register a subcommand (decorator on its runner)."""

    def decorate(run: Runner) -> Runner:
        COMMANDS[name] = Command(name, help, configure or (lambda _parser: None), run, epilog)
        return run

    return decorate


def exit_code(error: BaseException) -> int:
    """The exit code for an error that reached the top (see the module docstring)."""
    if isinstance(error, BackendError | StoreError):
        return EXIT_BACKEND
    if isinstance(error, AfperturbError):
        return EXIT_USAGE
    if isinstance(error, OSError):
        return EXIT_BACKEND
    if type(error).__name__ == "ValidationError":  # pydantic: a bad option value
        return EXIT_USAGE
    return EXIT_INTERNAL


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if type(error).__name__ == "ValidationError":
        text = "invalid value: " + text
    if exit_code(error) == EXIT_INTERNAL:
        text = f"internal error ({type(error).__name__}): {text}"
    return text


def build_parser(description: str, epilog: str) -> argparse.ArgumentParser:
    """The full parser, one subparser per registered command."""
    parser = argparse.ArgumentParser(
        prog="afperturb",
        description=description,
        epilog=epilog + "\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS.values():
        child = sub.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.help,
            epilog=(cmd.epilog + "\n" if cmd.epilog else "") + EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.configure(child)
        child.formatter_class = argparse.RawDescriptionHelpFormatter
        child.set_defaults(_run=cmd.run)
    return parser


def run_main(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the command; errors print one line (no traceback)."""
    try:
        args = parser.parse_args(argv)
        run: Any = args._run
        return int(run(args))
    except KeyboardInterrupt:
        print("afperturb: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("AFPERTURB_DEBUG"):
            raise
        print(f"afperturb: error: {_one_line(exc)}", file=sys.stderr)
        return exit_code(exc)


__all__ = [
    "COMMANDS",
    "EXIT_BACKEND",
    "EXIT_CHECK_FAILED",
    "EXIT_CODES",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "build_parser",
    "command",
    "exit_code",
    "run_main",
]
