"""`env status`: each machine's provider, state, address and box, asked of the
hypervisor (never a cached state)."""

from __future__ import annotations

from typing import Annotated

import typer


def status(
    ctx: typer.Context,
    json: Annotated[bool, typer.Option("--json", help="Print the machines as JSON.")] = False,
) -> None:
    """Show each machine: provider, state, address, box digest."""
    from vbox_cli.envfile.cache import read, summarize
    from vbox_cli.machines import status as machine_status
    from vbox_cli.project import Project

    context = ctx.obj
    path = context.envfile_path()
    machines = summarize(path, read(path))["machines"]
    project = Project.at(path.parent)
    rows = machine_status(project, machines)
    if json:
        context.out.json({"project": project.id, "machines": rows})
        return
    context.out.table(["machine", "provider", "state", "address", "box"],
                      [(r["name"], r["provider"], r["state"], r["address"],
                        f"{r['box']} {r['box_digest'][:19]}".strip()) for r in rows],
                      title=f"project {project.id}")
