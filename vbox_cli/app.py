"""The typer application: global options, the verbs, and the one place errors become
exit codes."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from vbox_cli import __version__
from vbox_cli.errors import EXIT_FAILURE, EXIT_USAGE, VboxError
from vbox_cli.output import Output

HELP = """\
vbox: declarative dev environments.

A project keeps an Envfile (TOML) in git; vbox brings up the LXC containers, KVM
virtual machines and Xen guests it declares, from cached base boxes, and provisions
them over SSH.

As `env`, any arguments that are not a vbox verb go to the system's env unchanged
(`env FOO=bar cmd`, `env -i ...`); `vbox` is the same CLI without that passthrough.
"""


@dataclass
class Context:
    out: Output
    envfile: Optional[Path] = None
    ndjson: object = None  # vbox_cli.events.NdjsonSink, with --events
    verbose: bool = False  # --verbose: an error's details (a log's tail) too
    clock: object = None  # vbox_cli.events.PhaseClock of the command's stream
    failure: Optional[tuple[str, Optional[str]]] = None  # (message, hint) of a command that exits 1

    def start_events(self, command: str, subject_key: str = "machine"):
        """NDJSON on stdout from here on: every other line the command prints goes to stderr."""
        from vbox_cli.events import NdjsonSink

        if self.ndjson is None:
            self.ndjson = NdjsonSink(command, subject_key)
            self.out.to_stderr = True
        return self.ndjson

    def finish(self, exit_code: int, error: Optional[str] = None, hint: Optional[str] = None) -> None:
        """The last NDJSON line: the command's result, naming its failure."""
        if self.ndjson is None:
            return
        from vbox_cli.events import Event

        if exit_code and error is None and self.failure:
            error, hint = self.failure
        self.ndjson.handle(Event("result", None, ok=exit_code == 0, exit_code=exit_code, error=error, hint=hint))

    def envfile_path(self) -> Path:
        """The Envfile given with --file, else the nearest one from here upwards."""
        from vbox_cli.errors import UsageError
        from vbox_cli.paths import find_envfile

        if self.envfile is not None:
            return self.envfile
        found = find_envfile()
        if found is None:
            raise UsageError(
                f"no Envfile in {Path.cwd()} or any folder above it",
                hint="run `env init` to write one, or pass --file PATH",
            )
        return found


def _version(value: bool) -> None:
    if value:
        print(f"vbox {__version__}")
        raise typer.Exit()


# verb -> (its module in vbox_cli.commands, its function there; None: the module's own
# typer app of sub-verbs), in the order --help lists them
COMMANDS = {
    "init": ("init", "init"), "validate": ("validate", "validate"), "schema": ("schema", "schema"),
    "up": ("up", "up"), "lock": ("up", "lock"), "diff": ("up", "diff"), "status": ("status", "status"),
    "stats": ("stats", "stats"), "ssh": ("ssh", "ssh"), "ssh-config": ("ssh", "ssh_config"),
    "inventory": ("ssh", "inventory"), "console": ("ssh", "console"), "port": ("port", "port"),
    "provision": ("up", "provision"), "restore": ("up", "restore"), "halt": ("up", "halt"),
    "suspend": ("up", "suspend"), "resume": ("up", "resume"), "migrate": ("up", "migrate"),
    "reload": ("up", "reload"), "destroy": ("up", "destroy"), "snapshot": ("snapshot", None),
    "box": ("box", None), "doctor": ("doctor", "doctor"),
}
# global options that take a value (the verb comes after it)
_VALUED = frozenset({"--file", "-f"})


def verb_of(args: list[str]) -> str | None:
    """The verb of a command line, when it is one of vbox's: the first word that is not a
    global option or its value."""
    words = iter(args)
    for word in words:
        if word in _VALUED:
            next(words, None)
        elif word == "--" or not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def make_app(only: str | None = None) -> typer.Typer:
    """The CLI; with `only`, that verb alone (the others are neither imported nor
    inspected: typer reads every command's signature, 20 to 100 ms for all of them)."""
    app = typer.Typer(
        help=HELP,
        no_args_is_help=True,
        add_completion=True,  # --install-completion / --show-completion: bash, zsh, fish
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def main(
        ctx: typer.Context,
        plain: Annotated[bool, typer.Option("--plain", help="Plain line output even on a terminal.")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the details of a failure (a log's "
                                                                      "last lines), not only what failed.")] = False,
        file: Annotated[
            Optional[Path],
            typer.Option("--file", "-f", help="Envfile to use. Default: ./Envfile, or the nearest one above."),
        ] = None,
        version: Annotated[
            bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
        ] = False,
    ) -> None:
        context = ctx.obj
        if plain:
            context.out.plain = True
        context.envfile = file
        context.verbose = verbose

    import importlib

    for verb, (module, function) in COMMANDS.items():
        if only is not None and verb != only:
            continue
        commands = importlib.import_module(f"vbox_cli.commands.{module}")
        if function is None:
            app.add_typer(commands.app, name=verb)
        else:
            app.command(verb)(getattr(commands, function))
    return app


def _click_exceptions():
    from click import exceptions  # typer < 0.20 sits on click (see pyproject.toml)

    return exceptions


def run(args: list[str], prog_name: str) -> int:
    import signal

    # SIGTERM unwinds like Ctrl-C, so that cleanup (a half-built box) runs.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    completing = any(key.endswith("_COMPLETE") for key in os.environ)
    app = make_app(None if completing else verb_of(args))
    out = Output()
    context = Context(out=out)
    code, error = _invoke(app, args, prog_name, context)
    context.finish(code, *(error or (None, None)))
    return code


def _invoke(app, args: list[str], prog_name: str, context: Context):
    """(exit code, (error, hint) or None): the one place errors become exit codes."""
    click_exceptions = _click_exceptions()
    out = context.out
    try:
        result = typer.main.get_command(app).main(args=args, prog_name=prog_name, standalone_mode=False,
                                                  obj=context)
        return (result if isinstance(result, int) else 0), None
    except VboxError as exc:
        _report(out, exc, context.verbose)
        return exc.exit_code, (exc.message, exc.hint)
    except typer.Exit as exc:
        return exc.exit_code, None
    except typer.Abort:
        out.error("aborted")
        return 130, ("aborted", None)
    except click_exceptions.NoArgsIsHelpError as exc:
        print(exc.format_message())
        return EXIT_USAGE, None
    except click_exceptions.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else prog_name
        out.error(exc.format_message(), hint=f"see `{command} --help`")
        return EXIT_USAGE, (exc.format_message(), None)
    except click_exceptions.ClickException as exc:
        out.error(exc.format_message())
        return exc.exit_code, (exc.format_message(), None)
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130, ("interrupted", None)
    except BrokenPipeError:
        return EXIT_FAILURE, None
    except Exception as exc:  # a bug: say so plainly, show the traceback on request
        from providers.hosts import lost_error
        from vbox_cli.errors import disk_error

        if (error := disk_error(exc) or lost_error(exc)) is not None:
            _report(out, error)
            return EXIT_FAILURE, (error.message, error.hint)
        if os.environ.get("VBOX_DEBUG"):
            raise
        message = f"internal error: {type(exc).__name__}: {exc}"
        out.error(message, hint="run again with VBOX_DEBUG=1 for a traceback")
        return EXIT_FAILURE, (message, None)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _report(out: Output, exc: VboxError, verbose: bool = False) -> None:
    from vbox_cli.errors import EnvfileError

    if isinstance(exc, EnvfileError):
        for problem in exc.problems:
            line = f"{problem.file}:{problem.line}:{problem.column}: "
            line += f"{problem.path}: {problem.message}" if problem.path else problem.message
            print(line, file=sys.stderr)
            if problem.hint:
                print(f"    hint: {problem.hint}", file=sys.stderr)
        out.error(exc.message)
        return
    out.error(exc.message, exc.hint, exc.details if verbose else None, more=bool(exc.details) and not verbose)
