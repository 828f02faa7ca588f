"""One exception hierarchy. Every error a user can see carries a message and a hint."""

from __future__ import annotations

from typing import Mapping, TypeVar

T = TypeVar("T")

EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_BAD_INPUT = 2


class OsbuilderError(Exception):
    """Base class: `message` says what is wrong, `hint` says how to fix it."""

    exit_code = EXIT_BUILD_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def details(self) -> str:
        """Extra lines shown after the one-line summary (empty by default)."""
        return ""


class UserError(OsbuilderError):
    """Bad input: a flag, a file or a recipe the user can correct. Exit code 2."""

    exit_code = EXIT_BAD_INPUT


class BuildError(OsbuilderError):
    """A build step failed for a reason other than the user's input. Exit code 1."""


class InternalError(BuildError):
    """osbuilder broke a promise of its own (not the user's input, not a failing tool):
    exit code 1, "internal error", and a request to report it."""

    def __init__(self, message: str) -> None:
        super().__init__(f"internal error: {message}",
                         "please report this with the command line (rerun with -v for the traceback)")


class CommandError(BuildError):
    """An external command failed; carries the command, its exit code and the stderr tail."""

    def __init__(self, argv: list[str], returncode: int | None, stderr_tail: str, hint: str | None = None) -> None:
        what = "timed out" if returncode is None else f"exited with code {returncode}"
        super().__init__(f"command '{argv[0]}' {what}", hint or "see the output above; rerun with --verbose for the full log")
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail

    @property
    def out_of_space(self) -> bool:
        """The tool stopped because its output's filesystem is full (tools say so only in words)."""
        # GNU tar says "Wrote only N of M bytes" for the short write a full disk gives it.
        return "No space left on device" in self.stderr_tail or "Wrote only" in self.stderr_tail

    def details(self) -> str:
        lines = ["  command: " + " ".join(self.argv)]
        if self.stderr_tail:
            lines.append("  stderr (last lines):")
            lines.extend("    " + line for line in self.stderr_tail.splitlines())
        return "\n".join(lines)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt is, so that the same cleanup runs."""


class Interrupted(OsbuilderError):
    """Ctrl-C or SIGTERM: staging is cleaned up on the way out. Exit 128 + the signal's
    number, as a shell reports a command the signal stopped: 130 for SIGINT, 143 for SIGTERM."""

    exit_code = 130
    EXIT_CODES = (130, 143)

    def __init__(self, signum: int = 2, hint: str = "staging files were removed; nothing was written") -> None:
        super().__init__("interrupted", hint)
        self.exit_code = 128 + signum


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """One entry of a registry; an unknown name is the user's to fix, with the choices."""
    try:
        return table[name]
    except KeyError:
        raise UserError(f"unknown {what} '{name}'", f"use one of: {', '.join(table)}") from None
