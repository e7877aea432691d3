"""What the machine verbs share: opening the project under its lock, showing results."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import typer

from vbox_cli.errors import EXIT_FAILURE


@contextmanager
def open_session(ctx: typer.Context, names: list[str], lock: bool = True) -> Iterator:
    """The project of the Envfile, loaded and validated, with the project lock held."""
    from vbox_cli.envfile.load import load
    from vbox_cli.machines import Session
    from vbox_cli.output import MachineProgress
    from vbox_cli.project import Project

    context = ctx.obj
    path = context.envfile_path()
    loaded = load(path)
    project = Project.at(loaded.project_dir)
    session = Session(project, loaded)
    shown = session.select(names)
    progress = MachineProgress(context.out, shown)
    session.events.phase, session.events.output, session.events.note = progress.phase, progress.output, progress.note
    if not lock:
        with progress:
            yield session
        return
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
