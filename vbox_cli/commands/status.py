"""`env status`: each machine's provider, state, address and box, asked of the
hypervisor (never a cached state)."""

from __future__ import annotations

from typing import Annotated

import typer


def status(
    ctx: typer.Context,
    json: Annotated[bool, typer.Option("--json", help="Print the machines as JSON.")] = False,
) -> None:
    """Show each machine: provider, state, address, its host where one is on another
    libvirt host (`host`, or `env migrate`), box digest; then, for a machine that
    differs from what the Envfile now says (box, cpus, memory, networks, steps not run),
    what differs and what applies it (reload, provision, destroy and up)."""
    from vbox_cli.commands.session import read_project
    from vbox_cli.machines import status as machine_status

    context = ctx.obj
    project, machines = read_project(ctx)
    rows = machine_status(project, machines)
    if json:
        context.out.json({"project": project.id, "machines": rows})
        return
    hosts = any(r["host"] for r in rows)  # a column of hosts where a machine is on another one
    context.out.table(["machine", "provider", "state", "address", *(["host"] if hosts else []), "box"],
                      [(r["name"], r["provider"], r["state"], r["address"],
                        *([r["host"] or "this host"] if hosts else []),
                        f"{r['box']} {r['box_digest'][:19]}".strip()) for r in rows],
                      title=f"project {project.id}")
    for row in rows:
        for line in row["drift"]:
            context.out.line(f"{row['name']}: Envfile changed: {line}")
