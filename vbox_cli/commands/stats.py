"""`env stats`: what each machine uses, read from the host."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vbox_cli.commands import complete
from vbox_cli.commands.session import check_names

COLUMNS = ["machine", "state", "cpu", "memory", "disk", "net in/out", "procs", "oom", "hits"]  # hits: of the memory limit


def stats(
    ctx: typer.Context,
    names: Annotated[Optional[list[str]], typer.Argument(help="Machines (default: all).", show_default=False,
                                                         autocompletion=complete.machines)] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON (bytes, seconds).")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh the table every 2 s until Ctrl-C.")] = False,
) -> None:
    """Show what each running machine uses, read from cgroups and libvirt (never by
    logging in): CPU (% of one CPU over half a second), memory used / limit, disk used
    (/ size), network bytes in / out, and for containers the processes, OOM kills and
    hits of the memory limit (OpenVZ's beancounters)."""
    from vbox_cli.commands.session import read_project
    from vbox_cli.machines.usage import rows as usage_rows

    out = ctx.obj.out
    project, machines = read_project(ctx)
    wanted = names or list(machines)
    check_names(machines, wanted)
    found, last = usage_rows(project, machines, wanted)
    if json:
        out.json({"project": project.id, "machines": found})
        return
    if not watch:
        out.table(COLUMNS, [_cells(r) for r in found], title=f"project {project.id}")
        return
    import time

    from rich.live import Live
    from rich.table import Table

    def render(current: list[dict]) -> Table:
        table = Table(title=f"project {project.id} (Ctrl-C to stop)", title_justify="left", box=None,
                      pad_edge=False)  # no borders: nine columns fit 80
        for column in COLUMNS:
            table.add_column(column.upper(), no_wrap=True)
        for row in current:
            table.add_row(*_cells(row))
        return table

    try:
        with Live(render(found), console=out.console, auto_refresh=False) as live:
            while True:
                time.sleep(2)
                found, last = usage_rows(project, machines, wanted, previous=last)
                live.update(render(found), refresh=True)
    except KeyboardInterrupt:
        pass


def _size(value) -> str:
    if value is None:
        return "-"
    for unit, size in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value}B"


def _cells(row: dict) -> tuple[str, ...]:
    if "memory_used" not in row:
        return (row["name"], row["state"], row.get("note", "-"), "", "", "", "", "", "")
    cpu = "-" if row["cpu_percent"] is None else f"{row['cpu_percent']:.0f}%"
    memory = f"{_size(row['memory_used'])} / {_size(row['memory_limit'])}"
    disk = _size(row["disk_used"]) + (f" / {_size(row['disk_size'])}" if row["disk_size"] else "")
    net = f"{_size(row['net_in'])} / {_size(row['net_out'])}"
    counts = [("-" if row[k] is None else str(row[k])) for k in ("processes", "oom_kills", "memory_limit_hits")]
    return (row["name"], row["state"], cpu, memory, disk, net, *counts)
