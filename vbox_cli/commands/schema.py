"""`env schema`: the Envfile's JSON Schema, for editors."""

from __future__ import annotations

import typer


def schema(ctx: typer.Context) -> None:
    """Print the JSON Schema of the Envfile (for editor completion and checking)."""
    from vbox_cli.envfile.model import json_schema

    ctx.obj.out.json(json_schema())
