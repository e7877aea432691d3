"""What the machine verbs share: reading or opening the project, choosing where events
go, showing results."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Iterator

import typer

from vbox_cli.errors import EXIT_FAILURE

Events = Annotated[bool, typer.Option(
    "--events", help="Report as NDJSON on stdout, one event per line (docs/events.md); nothing else on stdout.")]
Yes = Annotated[bool, typer.Option(
    "--yes", "-y", help="Accept the Envfile's host triggers without asking (CI); env asks before running a "
                        "host command it has not run before.")]
TRIGGER_VERBS = ("up", "halt", "reload", "provision", "destroy")


def check_names(machines: dict, names: list[str]) -> None:
    from vbox_cli.errors import UsageError

    unknown = [n for n in names if n not in machines]
    if unknown:
        raise UsageError(f"no machine named {', '.join(map(repr, unknown))} in the Envfile",
                         hint="machines: " + ", ".join(machines))


def read_project(ctx: typer.Context):
    """(project, machines) for the verbs that only read: the machines' settings as plain
    dicts, from the validated-Envfile cache (no pydantic, no lock)."""
    from vbox_cli.envfile.cache import read, summarize
    from vbox_cli.project import Project

    path = ctx.obj.envfile_path()
    return Project.at(path.parent), summarize(path, read(path))["machines"]


@contextmanager
def event_stream(ctx: typer.Context, command: str, names: list[str], events: bool,
                 subject_key: str = "machine", show_output: bool = True) -> Iterator:
    """The command's EventStream: NDJSON on stdout with --events (the final `result` line
    is written by vbox_cli.app once the exit code is known), a live view on a terminal,
    plain lines elsewhere."""
    from vbox_cli.events import EventStream, LiveSink, PhaseClock, PlainSink

    context = ctx.obj
    context.clock = PhaseClock()
    if events:
        yield EventStream([context.start_events(command, subject_key), context.clock])
        return
    if context.out.plain:
        yield EventStream([PlainSink(names, show_output=show_output), context.clock])
        return
    with LiveSink(context.out.console, names, show_output=show_output) as live:
        yield EventStream([live, context.clock])


@contextmanager
def open_session(ctx: typer.Context, command: str, names: list[str], events: bool = False,
                 autostart_only: bool = False, yes: bool = False) -> Iterator:
    """The project of the Envfile, loaded and validated, with the project lock held; for
    a verb with triggers, its host triggers accepted (asked, or --yes) first."""
    from vbox_cli.envfile.load import load
    from vbox_cli.machines import Session
    from vbox_cli.project import Project

    context = ctx.obj
    if events:
        context.start_events(command)  # a failure before the session exists still ends with a result
    loaded = load(context.envfile_path())
    if command in TRIGGER_VERBS and any(m.triggers or m.provision for m in loaded.machines.values()):
        import sys

        from vbox_cli.machines.triggers import approve  # host triggers and ansible steps run on this host

        approve(loaded, command, yes, interactive=sys.stdin.isatty() and not events,
                confirm=lambda text: typer.confirm(text, default=False))
    project = Project.at(loaded.project_dir)
    session = Session(project, loaded)
    shown = session.select(names, autostart_only=autostart_only)
    with event_stream(ctx, command, shown, events) as stream:
        from vbox_cli.sshmux import Closer

        stream.sinks.append(Closer(project.id))  # a machine that halts, moves, ...: its ssh master ends
        session.events = stream
        with project.lock(on_wait=lambda: stream.note("another env command is running in this project; waiting")):
            yield session


def report(ctx: typer.Context, results, title: str) -> None:
    """The summary table; exits 1 if any machine failed, after naming each failure."""
    out = ctx.obj.out
    if not results:
        out.line("no machines selected")
        return
    clock = getattr(ctx.obj, "clock", None)
    addresses = {r.machine: clock.ready.get(r.machine, "") for r in results} if clock else {}
    width = max(len(r.machine) for r in results) + max([len(a) for a in addresses.values()] + [0])
    room = max(20, 80 - width - 22)  # the table stays within 80 columns
    rows = [(r.machine, r.action if r.ok else _cut(f"FAILED: {_first_line(r.error.message, r.machine)}", room),
             *((addresses[r.machine],) if any(addresses.values()) else ()), f"{r.seconds:.1f}") for r in results]
    out.table(["machine", "result", *(("address",) if any(addresses.values()) else ()), "seconds"], rows, title=title,
              one_line=("result",))
    if clock and not ctx.obj.out.to_stderr:  # how long each phase took, a line per machine
        for result in results:
            if spent := clock.summary(result.machine):
                out.line(_cut(f"  {result.machine}: {spent}", 80))
    failed = [r for r in results if not r.ok]
    for result in failed:  # one line each (the table cut it); the details with --verbose
        error = result.error
        out.error(error.message.splitlines()[0], error.hint, error.details if ctx.obj.verbose else None,
                  more=bool(error.details) and not ctx.obj.verbose)
    if failed:
        first = failed[0].error
        ctx.obj.failure = (f"{len(failed)} of {len(results)} machines failed; first: {first.message.splitlines()[0]}",
                           first.hint)
        raise typer.Exit(EXIT_FAILURE)


def _first_line(message: str, machine: str) -> str:
    return message.splitlines()[0].removeprefix(f"{machine}: ")


def _cut(text: str, room: int) -> str:
    return text if len(text) <= room else text[:room - 1] + "…"
