"""`env up`, `reload`, `provision`, `halt`, `destroy`: the verbs that change machines."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vbox_cli.commands import complete
from vbox_cli.commands.session import Events, Yes, open_session, report

Names = Annotated[Optional[list[str]], typer.Argument(help="Machines to act on (default: all).", show_default=False,
                                                     autocompletion=complete.machines)]
Jobs = Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Machines at once (default: all).")]
InPlace = Annotated[bool, typer.Option(
    "--in-place", help="Run changed steps on top of what the old ones left, instead of going back to the "
                       "snapshot before the first changed step.")]


def up(
    ctx: typer.Context,
    names: Names = None,
    jobs: Jobs = None,
    no_provision: Annotated[bool, typer.Option("--no-provision", help="Bring machines up without provisioning.")]
    = False,
    accel: Annotated[Optional[str], typer.Option(
        "--accel", help="kvm machines made by this command: auto, kvm or tcg (overrides the Envfile).")] = None,
    restart_if_needed: Annotated[bool, typer.Option(
        "--restart-if-needed", help="Restart running machines that take an Envfile change only at a start "
                                    "(a KVM machine's synced folders); without it, up says which.")] = False,
    locked: Annotated[bool, typer.Option(
        "--locked", help="Use the boxes Envfile.lock names (fetched from their catalog if missing) and make "
                         "nothing if anything differs from the lock (CI). Never rewrites the lock.")] = False,
    abort_on_error: Annotated[bool, typer.Option(
        "--abort-on-error", help="When a machine fails, destroy the machines this up made (the default keeps "
                                 "them up, to look into).")] = False,
    in_place: InPlace = False,
    yes: Yes = False,
    events: Events = False,
) -> None:
    """Bring machines up: create them from their box, start them, wait for SSH and run
    the provisioning steps not yet run. Machines come up in parallel; a machine that is
    already up and provisioned is left alone (a running container gets changed synced
    folders live).

    Without names, every machine with autostart = true. The first up of every machine
    writes Envfile.lock (the boxes and steps they got) when there is none: commit it."""
    from typing import get_args

    from vbox_cli import machines
    from vbox_cli.envfile.types import Accel
    from vbox_cli.errors import UsageError

    if accel is not None and accel not in get_args(Accel):
        raise UsageError(f"--accel must be one of {', '.join(get_args(Accel))}, not {accel!r}")
    with open_session(ctx, "up", names or [], events, autostart_only=not names, yes=yes) as session:
        session.accel = accel
        results = machines.up(session, names or [], jobs=jobs, provision=not no_provision,
                              restart=restart_if_needed, locked=locked, abort_on_error=abort_on_error,
                              in_place=in_place)
    report(ctx, results, "up")


def lock(
    ctx: typer.Context,
    update: Annotated[bool, typer.Option(
        "--update", help="Take the newest box version box_version allows from each machine's box_url (fetched), "
                         "not the newest in the store.")] = False,
    events: Events = False,
) -> None:
    """Write Envfile.lock: for every machine, its box (name, version, digest, where it came
    from) and a hash of each provisioning step with the files it reads. Says what changed
    from the lock it replaces. Commit it; `env up --locked` checks it."""
    from vbox_cli import lockfile
    from vbox_cli.machines.boxes import boxes_for

    out = ctx.obj.out
    with open_session(ctx, "lock", [], events) as session:
        names = list(session.machines)
        path = lockfile.path_of(session.loaded.path)
        boxes = boxes_for(session, names, update=update)
        now = lockfile.compute(session.loaded, boxes, names)
        try:
            changed = lockfile.differences(lockfile.read(path), now, names, names)
        except lockfile.LockError:
            changed = None  # none yet, or unreadable: written anew
        lockfile.write(path, now)
    if changed:
        for line in changed:
            out.line(f"  {line}")
    out.success(f"{'wrote' if changed is None else 'updated' if changed else 'unchanged:'} {path.name} "
                f"({len(names)} machine{'s' if len(names) != 1 else ''})")


def reload(ctx: typer.Context, names: Names = None, jobs: Jobs = None, yes: Yes = False,
           events: Events = False) -> None:
    """Halt and bring up again, applying Envfile changes to cpus and memory."""
    from vbox_cli import machines

    with open_session(ctx, "reload", names or [], events, yes=yes) as session:
        halted = machines.halt(session, names or [], jobs=jobs, verb="reload")
        failed = [r for r in halted if not r.ok]  # its before-reload trigger failed, or it would not stop
        again = [n for n in session.select(names or []) if n not in {r.machine for r in failed}]
        results = failed + (machines.up(session, again, jobs=jobs, verb="reload") if again else [])
    report(ctx, results, "reload")


def provision(
    ctx: typer.Context,
    names: Names = None,
    jobs: Jobs = None,
    force: Annotated[bool, typer.Option("--force", help='Also run the run = "once" steps that ran already.')]
    = False,
    from_step: Annotated[Optional[int], typer.Option(
        "--from", min=1, metavar="N", help="Go back to the snapshot before step N (1 for the first) and run the "
                                           "steps from there.")] = None,
    in_place: InPlace = False,
    yes: Yes = False,
    events: Events = False,
) -> None:
    """Run the provisioning steps on running machines: run = "always" steps, and
    run = "once" steps not yet run (all of them with --force).

    When a step changed (its settings, or a project file it reads) or went, the machine
    goes back to the snapshot vbox took before the first changed step, and the steps run
    from there: not on top of what the old step left. vbox keeps a snapshot before the
    first step and after each (for providers that have snapshots)."""
    from vbox_cli import machines
    from vbox_cli.errors import UsageError

    if sum((force, from_step is not None, in_place)) > 1:
        raise UsageError("--force, --from and --in-place do not go together: choose one")
    with open_session(ctx, "provision", names or [], events, yes=yes) as session:
        results = machines.provision(session, names or [], force=force, jobs=jobs, from_step=from_step,
                                     in_place=in_place)
    report(ctx, results, "provision")


def restore(ctx: typer.Context, names: Names = None, jobs: Jobs = None, events: Events = False) -> None:
    """Return machines to the state right after their last complete provisioning (the
    snapshot vbox took after their last step), discarding what changed since. A running
    machine is powered off, restored and started again."""
    from vbox_cli.machines import incremental
    from vbox_cli.machines.runner import run_each

    with open_session(ctx, "restore", names or [], events) as session:
        results = run_each(session, session.select(names or []), lambda n: incremental.restore(session, n), jobs)
    report(ctx, results, "restore")


def suspend(ctx: typer.Context, names: Names = None, jobs: Jobs = None, events: Events = False) -> None:
    """Suspend running machines: their memory and processes saved to disk, the machines
    stopped and this host's memory freed; `env resume` (or `env up`) brings them back as
    they were. KVM: libvirt's managed save (not with synced folders: QEMU cannot save
    virtiofs); LXC: CRIU."""
    from vbox_cli.machines.suspend import suspend as suspend_machines

    with open_session(ctx, "suspend", names or [], events) as session:
        results = suspend_machines(session, names or [], jobs=jobs)
    report(ctx, results, "suspend")


def resume(ctx: typer.Context, names: Names = None, jobs: Jobs = None, events: Events = False) -> None:
    """Resume suspended machines where they were: same processes, same memory."""
    from vbox_cli.machines.suspend import resume as resume_machines

    with open_session(ctx, "resume", names or [], events) as session:
        results = resume_machines(session, names or [], jobs=jobs)
    report(ctx, results, "resume")


def migrate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The machine to move.", show_default=False)],
    to: Annotated[str, typer.Option(
        "--to", metavar="HOST", help="Where to: a machine of the Envfile that is a libvirt host (the kvm-host box), "
                                     "or a libvirt URI (qemu+ssh://root@HOST/system; qemu:///system: this host; "
                                     "for an LXC machine lxc+ssh://root@HOST/system, and lxc:///system: this host; for a "
                                     "Xen guest xen+ssh://root@HOST/system).",
        show_default=False)],
    cold: Annotated[bool, typer.Option(
        "--cold", help="Shut a running machine down, move it with its disk whole (and its snapshots), start it "
                       "there. Without it a running machine moves live.")] = False,
    events: Events = False,
) -> None:
    """Move a machine to another libvirt host. A running KVM machine moves live: its memory
    and its disk's own layer are copied while it runs, and it pauses only for the last
    round. A stopped one (or one moved with --cold) goes with its disk whole and its
    snapshots. An LXC machine moves cold, to libvirt's LXC driver there (a kvm-host booted
    as a KVM machine): shut down, its files copied as one image, started there. A Xen guest
    moves cold to another Xen host (libvirt's Xen driver sends memory, not disks). It joins
    the project's network there, and `status`, `ssh` and every other verb find it there
    afterwards."""
    from vbox_cli.machines.migrate import migrate as migrate_machine
    from vbox_cli.machines.migrate import target_uri
    from vbox_cli.machines.runner import run_each

    with open_session(ctx, "migrate", [name], events) as session:
        session.select([name])
        target_uri(session, name, to)  # a --to that names nothing: a usage error before anything is done
        results = run_each(session, [name], lambda n: migrate_machine(session, n, to, cold))
    report(ctx, results, "migrate")


def halt(ctx: typer.Context, names: Names = None, jobs: Jobs = None, yes: Yes = False,
         events: Events = False) -> None:
    """Shut machines down cleanly (powered off if they do not stop in 60 s)."""
    from vbox_cli import machines

    with open_session(ctx, "halt", names or [], events, yes=yes) as session:
        results = machines.halt(session, names or [], jobs=jobs)
    report(ctx, results, "halt")


def destroy(
    ctx: typer.Context,
    names: Names = None,
    jobs: Jobs = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Do not ask.")] = False,
    force_protected: Annotated[bool, typer.Option(
        "--force-protected", help="Destroy machines with protect = true too (-f alone does not).")] = False,
    yes: Yes = False,
    events: Events = False,
) -> None:
    """Destroy machines, leaving no trace. Without names: every machine of the project,
    machines it no longer declares, its network and .vbox/. Boxes stay in the store.

    Asks first on a terminal; elsewhere (a script, CI) it needs -f. A machine with
    protect = true in the Envfile is refused, and nothing destroyed, unless
    --force-protected."""
    import sys

    from vbox_cli import machines
    from vbox_cli.errors import UsageError

    if events:
        ctx.obj.start_events("destroy")  # a refusal below still ends with a result line
    what = ", ".join(names) if names else "every machine of this project"
    if not force and (not sys.stdin.isatty() or events):
        raise UsageError(f"destroy {what}: no terminal to ask on", hint="pass -f to destroy without asking")
    if not force:
        _refuse_protected(ctx, names or [], force_protected)  # before asking: a refusal needs no answer
        if not typer.confirm(f"Destroy {what}?", default=False):
            ctx.obj.out.line("nothing destroyed")
            return
    with open_session(ctx, "destroy", names or [], events, yes=yes) as session:
        results = machines.destroy(session, names or [], jobs=jobs, force_protected=force_protected)
    report(ctx, results, "destroy")


def _refuse_protected(ctx: typer.Context, names: list[str], force_protected: bool) -> None:
    """destroy's refusal of protected machines, from the Envfile and the project's records
    alone (machines.destroy checks again, in the session)."""
    if force_protected:
        return
    from vbox_cli.envfile.load import load
    from vbox_cli.machines.down import refuse_protected
    from vbox_cli.project import Project

    loaded = load(ctx.obj.envfile_path())
    if any(m.protect for m in loaded.machines.values()):
        refuse_protected(loaded.machines, Project.at(loaded.project_dir).load_state()["machines"], names)


def diff(ctx: typer.Context, names: Names = None) -> None:
    """What differs between the Envfile, Envfile.lock and the machines: each machine's box
    and steps against the lock (boxes as the store has them now), and each existing
    machine against the Envfile settings it was made and started with. Exit status 1 when
    anything differs (as diff(1)), 0 when nothing does."""
    from vbox_cli import lockfile
    from vbox_cli.errors import VboxError
    from vbox_cli.machines.boxes import boxes_for
    from vbox_cli.machines.drift import drift

    out = ctx.obj.out
    lines = []
    with open_session(ctx, "diff", names or [], False) as session:
        selected = session.select(names or [])
        path = lockfile.path_of(session.loaded.path)
        if path.exists() or path.is_symlink():
            try:
                pinned = lockfile.pins(path, session.machines)
                boxes = {}
                for name in selected:
                    if session.machines[name].box_url and not session.store.find(session.machines[name].box,
                                                                                 pinned.get(name)):
                        lines.append(f"{name}: box {session.machines[name].box} {pinned.get(name, '')} is not in "
                                     "the store (`env up --locked` fetches it)")
                        continue
                    boxes[name] = boxes_for(session, [name], pinned)[name]
                checked = [n for n in selected if n in boxes]
                lines += [f"lock: {line}" for line in lockfile.differences(
                    lockfile.read(path), lockfile.compute(session.loaded, boxes, checked), checked,
                    list(session.machines))]
            except VboxError as exc:
                lines.append(f"lock: {exc.message}")
        else:
            lines.append(f"lock: there is no {path.name} (`env lock` writes it)")
        state = session.project.load_state()["machines"]
        for name in selected:
            settings = session.machines[name].model_dump(mode="json", exclude={"name"})
            lines += [f"{name}: {line}" for line in drift(name, settings, state.get(name, {}))]
    for line in lines:
        out.line(line)
    if lines:
        raise typer.Exit(1)
    out.success("no differences: the machines, the Envfile and its lock agree")
