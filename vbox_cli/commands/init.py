"""`env init`: write a commented Envfile to start from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vbox_cli.errors import UsageError
from vbox_cli.paths import ENVFILE, GITIGNORE, STATE_DIR

TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "Envfile.init"


def init(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing Envfile.")] = False,
) -> None:
    """Write a commented Envfile in this folder and git-ignore .vbox/."""
    out = ctx.obj.out
    target = ctx.obj.envfile or Path.cwd() / ENVFILE
    if target.exists() and not force:
        raise UsageError(f"{target} exists already", hint="edit it, or pass --force to overwrite it")
    target.write_text(TEMPLATE.read_text())
    out.success(f"wrote {target}")
    if ignore_state_dir(target.parent / GITIGNORE):
        out.line(f"added {STATE_DIR}/ to {target.parent / GITIGNORE}")
    out.line("next: `env validate`, then `env up`")


def ignore_state_dir(gitignore: Path) -> bool:
    """Add .vbox/ to the .gitignore; False when it is there already."""
    entry = f"{STATE_DIR}/"
    text = gitignore.read_text() if gitignore.exists() else ""
    if any(line.strip() in (STATE_DIR, entry, f"/{entry}", f"/{STATE_DIR}") for line in text.splitlines()):
        return False
    if text and not text.endswith("\n"):
        text += "\n"
    gitignore.write_text(f"{text}{entry}\n")
    return True
