"""`env validate`: check the Envfile and report every problem at once."""

from __future__ import annotations

from typing import Annotated

import typer

from vbox_cli.errors import EnvfileError


def validate(
    ctx: typer.Context,
    json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check the Envfile: every problem at once, each with its line, column and key."""
    from vbox_cli.envfile.cache import read, summarize
    from vbox_cli.paths import display_name

    context = ctx.obj
    path = context.envfile_path()
    try:
        summary = summarize(path, read(path))
    except EnvfileError as exc:
        if json:
            context.out.json({"file": exc.file, "ok": False, "problems": [p.as_dict() for p in exc.problems]})
            raise typer.Exit(exc.exit_code) from None
        raise
    machines = summary["machines"]
    if json:
        context.out.json({"file": display_name(path), "ok": True, "machines": machines})
        return
    count = len(machines)
    context.out.success(f"{display_name(path)}: {count} machine{'s' if count != 1 else ''} OK")
