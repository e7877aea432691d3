"""`env box add`, `publish`, `outdated`, `update` and `prune`: boxes from catalogs (boxes/catalog.py),
and keeping the store current (boxes/upkeep.py). They are verbs of `env box` (commands/box.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vbox_cli.commands import complete
from vbox_cli.commands.box import ByteProgress, app, format_size_human
from vbox_cli.commands.session import Events


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The box's name, as the catalog names it (team/debian-12).")],
    catalog: Annotated[str, typer.Option("--catalog", help="A catalog (Vagrant's box metadata JSON), a folder of "
                                         "catalogs or a box archive (.box): a URL or a path.", metavar="LOCATION")],
    version: Annotated[Optional[str], typer.Option("--version", help='Which versions will do, like ">= 12.1, < 13"; '
                                                   "default: the newest.", metavar="CONSTRAINT")] = None,
    events: Events = False,
) -> None:
    """Add a box from a catalog or an archive: downloaded (resumed where a download was
    cut short), its sha256 checked, then imported with every check of `env box import`.
    A version the store has already is not fetched again."""
    from boxes.catalog import CatalogError, locate, obtain
    from boxes.store import BoxStore
    from boxes.versions import Constraint
    from vbox_cli.commands.session import event_stream
    from vbox_cli.errors import UsageError, VboxError
    from vbox_cli.events import Phase
    from vbox_cli.paths import vbox_cache

    out = ctx.obj.out
    try:
        constraint = Constraint(version or "")
    except ValueError as exc:
        raise UsageError(f"--version: {exc}") from None
    if events:
        ctx.obj.start_events("box add", subject_key="box")
    store = BoxStore()
    with event_stream(ctx, "box add", [name], events, subject_key="box", show_output=False) as stream:
        try:
            where = locate(catalog)
            stream.phase(name, Phase.DOWNLOADING, str(where))
            box = obtain(store, name, where, constraint, vbox_cache() / "downloads",
                         ByteProgress(stream, name, Phase.DOWNLOADING),
                         on_wait=lambda: stream.note(f"waiting for another command fetching {name}", name),
                         on_phase=lambda what: stream.phase(name, Phase.VERIFYING, "sha256 and digests"))
        except CatalogError as exc:
            raise VboxError(f"box {name}: {exc.message}", hint=exc.hint) from None
        stream.phase(name, Phase.IMPORTED, f"{box.name} {box.version} {box.digest[:19]}")
    out.success(f"box {box.name} {box.version} ({box.digest[:19]}) is in the store")


@app.command("publish")
def publish(
    ctx: typer.Context,
    archive: Annotated[Path, typer.Argument(help="A box archive made by `env box export`.", metavar="FILE")],
    catalog: Annotated[Path, typer.Option("--catalog", help="The catalog folder to write (static files, for any "
                                          "web server).", metavar="FOLDER")],
    name: Annotated[Optional[str], typer.Option("--name", help="Publish it under this name (team/debian-12).")]
    = None,
) -> None:
    """Put a box archive into a catalog folder: FOLDER/NAME.json in Vagrant's box metadata
    format (other versions and providers kept) and the archive beside it with its sha256.
    Serve the folder over http(s) and name FOLDER's URL/NAME.json as box_url."""
    from boxes.catalog import CatalogError
    from boxes.catalog import publish as publish_box
    from vbox_cli.errors import UsageError, VboxError

    out = ctx.obj.out
    if not archive.is_file():
        raise UsageError(f"{archive}: no such file")
    try:
        box_name, version, catalog_file = publish_box(archive, catalog, name)
    except CatalogError as exc:
        raise VboxError(exc.message, hint=exc.hint) from None
    out.success(f"published {box_name} {version} in {catalog_file}")


@app.command("outdated")
def outdated(
    ctx: typer.Context,
    json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """List the boxes with a newer version: in the catalog they came from, or in vbox's
    recipe for boxes built here. `env box update` fetches the catalogs' ones."""
    from boxes.store import BoxStore
    from boxes.upkeep import outdated as find_outdated

    out = ctx.obj.out
    found = find_outdated(BoxStore())
    if json:
        out.json([{"name": o.name, "have": o.have, "newest": o.newest, "source": o.where, "error": o.error or None}
                  for o in found])
        return
    if not found:
        out.line("every box is the newest its source offers")
        return
    out.table(["name", "have", "newest", "from"],
              [(o.name, o.have, o.newest if not o.error else f"? ({o.error})",
                "recipe: `env box build`" if o.where == "recipe" else o.where) for o in found])


@app.command("update")
def update(
    ctx: typer.Context,
    names: Annotated[Optional[list[str]], typer.Argument(help="Boxes to update (default: every box from a catalog).",
                                                         autocompletion=complete.boxes, show_default=False)] = None,
    events: Events = False,
) -> None:
    """Fetch the newest version of boxes that came from a catalog (older versions stay
    until `env box prune`). Boxes built from a recipe: `env box build NAME`."""
    from boxes.catalog import CatalogError, locate, obtain
    from boxes.store import BoxStore
    from boxes.upkeep import outdated as find_outdated
    from boxes.versions import Constraint
    from vbox_cli.commands.session import event_stream
    from vbox_cli.errors import VboxError
    from vbox_cli.events import Phase
    from vbox_cli.paths import vbox_cache

    out = ctx.obj.out
    store = BoxStore()
    todo = [o for o in find_outdated(store) if o.where != "recipe" and not o.error and (not names or o.name in names)]
    if not todo:
        out.line("nothing to update")
        return
    if events:
        ctx.obj.start_events("box update", subject_key="box")
    with event_stream(ctx, "box update", [o.name for o in todo], events, subject_key="box",
                      show_output=False) as stream:
        for item in todo:
            try:
                box = obtain(store, item.name, locate(item.where), Constraint(f"= {item.newest}"),
                             vbox_cache() / "downloads", ByteProgress(stream, item.name, Phase.DOWNLOADING),
                             on_phase=lambda what, n=item.name: stream.phase(n, Phase.VERIFYING, "sha256 and digests"))
            except CatalogError as exc:
                raise VboxError(f"box {item.name}: {exc.message}", hint=exc.hint) from None
            stream.phase(item.name, Phase.IMPORTED, f"{box.version} {box.digest[:19]}")
    for item in todo:
        out.success(f"box {item.name}: {item.have} -> {item.newest}")


@app.command("prune")
def prune(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
) -> None:
    """Remove old versions of boxes: every version but the newest of each name, unless a
    machine uses it."""
    from boxes.store import BoxStore
    from boxes.upkeep import prunable
    from vbox_cli.machines.status import prune_box_users

    out = ctx.obj.out
    store = BoxStore()
    for name in {b.name for b in store.boxes()}:
        prune_box_users(store, name)  # records of machines that are gone do not keep a box
    old = prunable(store)
    if not old:
        out.line("nothing to prune: each box has only its newest version, or the others are in use")
        return
    for box in old:
        if dry_run:
            out.line(f"would remove {box.name} {box.version} ({format_size_human(box.size)})")
        else:
            store.remove(box, force=True)  # other versions may be in use: this one is not (prunable)
            out.success(f"removed box {box.name} {box.version} ({format_size_human(box.size)})")
