"""The error type of vbox and its exit codes.

Library code raises these; only the CLI (vbox_cli.app) turns them into output and an
exit status.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class VboxError(Exception):
    """Something went wrong that the user can act on; exits 1."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None, details: str | None = None):
        """`message`: one line saying what failed; `details`: the rest (a log's tail),
        shown with --verbose; `hint`: what to do, and where the full log is."""
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details


class UsageError(VboxError):
    """Bad arguments or bad input; exits 2."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One located problem in an Envfile."""

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass
class EnvfileError(UsageError):
    """Every problem found in one Envfile, reported together; exits 2."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        count = len(self.problems)
        UsageError.__init__(self, f"{self.file}: {count} problem{'s' if count != 1 else ''}")

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class CommandError(VboxError):
    """An external command failed; carries what is needed to reproduce it."""

    def __init__(self, argv: list[str], returncode: int, output: str = "", hint: str | None = None):
        import shlex

        self.argv = argv
        self.returncode = returncode
        self.output = output
        lines = output.strip().splitlines()
        last = lines[-1].strip() if lines else ""
        message = f"command failed with exit status {returncode}: {shlex.join(argv)}" + (f": {last}" if last else "")
        super().__init__(message, hint, details="\n".join(lines[-15:]) or None)


def disk_error(exc: BaseException) -> VboxError | None:
    """A full, over-quota or read-only disk, as the user's error it is (not vbox's bug)."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        where = f" {exc.filename}" if exc.filename else ""
        return VboxError(f"cannot write{where}: {exc.strerror}",
                         hint="free some space there (or make it writable) and run the command again: what was "
                              "done so far is kept")
    return None
