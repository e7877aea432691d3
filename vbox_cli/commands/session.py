"""What the machine verbs share: reading or opening the project, showing results."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import typer

from vbox_cli.errors import EXIT_FAILURE


def read_project(ctx: typer.Context):
    """(project, machines) for the verbs that only read: the machines' settings as plain
    dicts, from the validated-Envfile cache (no pydantic, no lock)."""
    from vbox_cli.envfile.cache import read, summarize
    from vbox_cli.project import Project

    path = ctx.obj.envfile_path()
    return Project.at(path.parent), summarize(path, read(path))["machines"]


@contextmanager
def open_session(ctx: typer.Context, names: list[str], autostart_only: bool = False) -> Iterator:
    """The project of the Envfile, loaded and validated, with the project lock held.
    Progress is shown for the machines the command will act on."""
    from vbox_cli.envfile.load import load
    from vbox_cli.machines import Events, Session
    from vbox_cli.output import MachineProgress
    from vbox_cli.project import Project

    context = ctx.obj
    loaded = load(context.envfile_path())
    project = Project.at(loaded.project_dir)
    session = Session(project, loaded)
    progress = MachineProgress(context.out, session.select(names, autostart_only=autostart_only))
    session.events = Events(progress.phase, progress.output, progress.note)
    with project.lock(on_wait=lambda: context.out.line("another env command is running in this project; waiting")):
        with progress:
            yield session


def report(ctx: typer.Context, results, title: str) -> None:
    """The summary table; exits 1 if any machine failed, after naming each failure."""
    out = ctx.obj.out
    if not results:
        out.line("no machines selected")
        return
    out.table(["machine", "result", "seconds"],
              [(r.machine, r.action if r.ok else f"FAILED: {r.error.message.splitlines()[0]}", f"{r.seconds:.1f}")
               for r in results], title=title)
    failed = [r for r in results if not r.ok]
    for result in failed:
        out.error(result.error.message, result.error.hint)
    if failed:
        raise typer.Exit(EXIT_FAILURE)

