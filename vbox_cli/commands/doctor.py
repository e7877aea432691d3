"""`env doctor`: check what vbox needs on this host, and fix it with --fix."""

from __future__ import annotations

from typing import Annotated

import typer


def doctor(
    ctx: typer.Context,
    fix: Annotated[bool, typer.Option("--fix", help="Install missing packages (apt) and start missing daemons.")]
    = False,
    json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
    leaks: Annotated[bool, typer.Option("--leaks", help="Instead, list what vbox made that is still on the host.")]
    = False,
    user: Annotated[str | None, typer.Option(
        "--user", metavar="NAME", help="Root: check too what the user NAME needs to use vbox without root (the "
        "libvirt group, polkit's system bus, subordinate ids); with --fix, prepare it.")] = None,
) -> None:
    """Check the host: libvirtd and its QEMU driver, QEMU, KVM or TCG, LXC, lxcfs,
    debootstrap, disk space. Exits 1 when something needed is missing.

    Run by a normal user: what that user can use (the system libvirt through the libvirt
    group, root's boxes, her own box builds and LXC machines) and what needs root. Root
    prepares a user with `env doctor --fix --user NAME`: the libvirt group, subordinate
    ids, bridges she may join (/etc/lxc/lxc-usernet), a cgroup of hers for LXC machines.

    With --leaks: list containers, libvirt networks, domains and volumes, mounts, veths
    and LXC monitors that vbox made and that are still there (of every project); exits 1
    if there are any."""
    if leaks:
        from providers.leaks import find

        found = find()
        if json:
            ctx.obj.out.json({"leaks": found})
        else:
            for line in found:
                ctx.obj.out.line(line)
            if not found:
                ctx.obj.out.success("nothing left behind")
        raise typer.Exit(1 if found else 0)
    from boxes.store import BoxStore
    from providers.daemons import fix as fix_host
    from providers.host import run_checks
    from vbox_cli.paths import vbox_home

    out = ctx.obj.out
    store = BoxStore()
    box = store.find("debian-12")
    kernel = box.artefact("kernel") if box else None

    needs = _envfile_needs()

    if user is not None:
        import os
        import pwd

        from vbox_cli.errors import UsageError

        if os.geteuid() != 0:
            raise UsageError("--user is for root: it checks and prepares this host for another user")
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise UsageError(f"no user named {user!r} on this host") from None

    def check():
        return run_checks(store.root, vbox_home(), kernel, "ovs" in needs, "ansible" in needs, user=user)

    report = check()
    if fix and not report.ok:
        report = fix_host(report, lambda text: out.line(f"doctor: {text}") if not json else None, check)
    if json:
        out.json({"ok": report.ok, "checks": [
            {"name": c.name, "status": c.status, "detail": c.detail, "packages": list(c.packages), "hint": c.hint}
            for c in report.checks]})
    else:
        rows = []
        for c in report.checks:
            remedy = c.hint or ""
            if not c.ok and c.repair is not None:
                remedy = f"{c.hint} (env doctor --fix)"
            elif not c.ok and c.packages:
                remedy = f"apt-get install {' '.join(c.packages)}"
            elif not c.ok and c.daemons:
                remedy = "start " + ", ".join(c.daemons)
            rows.append((c.name, c.status, c.detail, remedy))
        out.table(["check", "status", "detail", "fix"], rows)
        if not report.ok:
            out.error("some things vbox needs are missing",
                      hint=f"run `env doctor --fix{f' --user {user}' if user else ''}` (needs root)")
    if not report.ok:
        raise typer.Exit(1)


def _envfile_needs() -> set[str]:
    """What the Envfile of the current folder (if any, and readable) needs of the host
    beyond the usual: "ovs" (it joins an Open vSwitch bridge), "ansible" (ansible steps)."""
    from vbox_cli.envfile.load import load
    from vbox_cli.errors import VboxError
    from vbox_cli.paths import find_envfile

    path = find_envfile()
    if path is None:
        return set()
    try:
        machines = load(path).envfile.machines_resolved().values()
    except (VboxError, OSError):
        return set()
    needs = set()
    if any(net.ovs for machine in machines for net in machine.networks):
        needs.add("ovs")
    if any(getattr(step, "ansible", None) for machine in machines for step in machine.provision):
        needs.add("ansible")
    return needs
