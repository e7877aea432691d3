"""`env port`: the forwarded ports of the project's machines."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vbox_cli.commands import complete


def port(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="Only this machine.", autocompletion=complete.machines)] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the forwards as JSON.")] = False,
) -> None:
    """List the ports of this host forwarded to the machines: the host address and port
    (the one `auto` chose, if it did), the machine's port, and whether the kernel's rule is
    there now (forwards exist while a machine runs)."""
    from providers.ports import installed
    from vbox_cli.commands.session import check_names, read_project
    from vbox_cli.errors import VboxError

    project, machines = read_project(ctx)
    if name:
        check_names(machines, [name])
    try:
        active = {(i.machine, i.forward.protocol, i.forward.address, i.forward.host)
                  for i in installed() if i.project == project.id}
        known = True
    except VboxError:  # iptables needs root
        active, known = set(), False
    rows = []
    for machine, record in project.load_state()["machines"].items():
        if name and machine != name:
            continue
        for f in record.get("ports", []):
            key = (machine, f["protocol"], f["address"], f["host"])
            rows.append({"machine": machine, "protocol": f["protocol"], "address": f["address"], "host": f["host"],
                         "guest": f["guest"], "active": (key in active) if known else None})
    if json:
        ctx.obj.out.json({"project": project.id, "ports": rows})
        return
    if not rows:
        ctx.obj.out.line("no forwarded ports" + (f" for {name}" if name else "") + " (`ports` in the Envfile; "
                         "they are made at `env up`)")
        return
    state = {True: "forwarded", False: "not now (machine stopped)", None: "unknown (needs root)"}
    ctx.obj.out.table(["machine", "host", "guest", "state"],
                      [(r["machine"], f"{r['address']}:{r['host']}/{r['protocol']}", str(r["guest"]), state[r["active"]])
                       for r in rows], title=f"project {project.id}")
