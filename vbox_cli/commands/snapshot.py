"""`env snapshot save|restore|list|delete`: snapshots of a machine's disk."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vbox_cli.commands import complete
from vbox_cli.commands.session import Events, open_session, report

app = typer.Typer(help="Snapshots of a machine's disk: save one, restore it, list and delete them. Disk only: "
                       "a restore boots the machine from the saved disk (LXC: a copy of the container's "
                       "own layer; KVM: a qcow2 snapshot). destroy removes them with the machine.",
                  no_args_is_help=True)

def _checked(name: str | None) -> str | None:
    """A snapshot name the command line gave, refused before anything is opened."""
    from providers.base import check_snapshot_name
    from vbox_cli.errors import UsageError, VboxError

    try:
        return name if name is None else check_snapshot_name(name)
    except VboxError as exc:
        raise UsageError(exc.message) from None


def _run(ctx: typer.Context, verb: str, machine: str, name: str | None, events: bool) -> None:
    """One machine's `snapshot VERB`, with its events and its result table."""
    from vbox_cli.machines import snapshots
    from vbox_cli.machines.runner import run_each

    with open_session(ctx, f"snapshot {verb}", [machine], events) as session:
        results = run_each(session, [machine], lambda n: getattr(snapshots, verb)(session, n, name))
    report(ctx, results, f"snapshot {verb}")


Machine = Annotated[str, typer.Argument(help="The machine.", autocompletion=complete.machines, show_default=False)]


@app.command("save")
def save(
    ctx: typer.Context,
    machine: Machine,
    name: Annotated[Optional[str], typer.Argument(
        help="The snapshot's name: letters, digits, '.', '_', '-' (default: the time, 20261123-141500).",
        show_default=False)] = None,
    events: Events = False,
) -> None:
    """Save the machine's disk as a snapshot, running or stopped. A running machine's
    file systems are flushed first and it is held still for the moment of the copy."""
    _run(ctx, "save", machine, _checked(name), events)


@app.command("restore")
def restore(
    ctx: typer.Context,
    machine: Machine,
    name: Annotated[Optional[str], typer.Argument(help="The snapshot (default: the newest).",
                                                  show_default=False)] = None,
    events: Events = False,
) -> None:
    """Return the machine's disk to a snapshot (which is kept). A running machine is
    powered off, restored and started again; what it had not saved is lost. Its record
    of provisioning steps goes back too: `env provision` runs the steps run since."""
    _run(ctx, "restore", machine, _checked(name), events)


@app.command("delete")
def delete(
    ctx: typer.Context,
    machine: Machine,
    name: Annotated[str, typer.Argument(help="The snapshot.", show_default=False)],
    events: Events = False,
) -> None:
    """Delete one snapshot of the machine."""
    _run(ctx, "delete", machine, _checked(name), events)


@app.command("list")
def list_(
    ctx: typer.Context,
    machines: Annotated[Optional[list[str]], typer.Argument(
        help="Machines (default: all).", autocompletion=complete.machines, show_default=False)] = None,
    json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
    everything: Annotated[bool, typer.Option("--all", help="Also vbox's own, taken before the first provisioning "
                                                           "step and after each (vbox-step-N).")] = False,
) -> None:
    """List the snapshots of the machines, oldest first."""
    import time

    from vbox_cli.envfile.load import load
    from vbox_cli.machines import Session
    from vbox_cli.machines import snapshots
    from vbox_cli.project import Project

    out = ctx.obj.out
    loaded = load(ctx.obj.envfile_path())
    session = Session(Project.at(loaded.project_dir), loaded)
    rows = snapshots.listing(session, session.select(machines or []), everything)
    if json:
        out.json({"project": session.project.id, "snapshots": rows})
        return
    if not rows:
        out.line("no snapshots")
        return
    out.table(["machine", "snapshot", "created", "taken while", "steps run"],
              [(r["machine"], r["name"], time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"])),
                r["taken_while"], "?" if r["provisioned_steps"] is None else r["provisioned_steps"]) for r in rows])
