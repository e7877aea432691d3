"""`env box ...`: build, list and remove base boxes."""

from __future__ import annotations

import os

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from vbox_cli.commands import complete
from vbox_cli.commands.session import Events

app = typer.Typer(help="Base boxes: build them from recipes, list, export, import and remove them.",
                  no_args_is_help=True)


@app.command("build")
def build(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Argument(help="A recipe name (like debian-12) or the path of a recipe file.",
                                          autocompletion=complete.recipes)],
    force: Annotated[bool, typer.Option("--force", help="Build again even if the box is up to date.")] = False,
    mirror: Annotated[
        Optional[str], typer.Option("--mirror", help="Debian mirror to use instead of the recipe's.", metavar="URL")
    ] = None,
    from_meta: Annotated[
        Optional[Path], typer.Option("--from", help="An earlier build's box.json (or box archive): install the "
                                     "package versions it lists, where the mirror has them.", metavar="METADATA")
    ] = None,
    events: Events = False,
) -> None:
    """Build a box from its recipe (debootstrap from the Debian mirror).

    Builds are reproducible: the same package versions give the same digest. Does nothing
    when the store already holds the box built from this very recipe (unless --force or
    --from). As root, into the system's store; as a normal user, into her own store, in a
    user namespace of hers (her subordinate ids: `env doctor --fix --user NAME`, as root).
    """
    import os

    from boxes import userns

    if os.geteuid() != 0 and not userns.inside():
        if why := userns.unavailable():
            from vbox_cli.errors import VboxError

            raise VboxError(f"building a box without root needs a user namespace of your own: {why}",
                            hint="as root: `env doctor --fix --user $USER`; or use a box of root's store")
        import sys

        raise typer.Exit(userns.run(sys.argv[1:]))
    from boxes import recipe as recipes
    from boxes.build import Reporter
    from boxes.build import build as build_box
    from boxes.store import BoxStore
    from vbox_cli.commands.session import event_stream
    from vbox_cli.events import Phase
    from vbox_cli.paths import vbox_cache

    out = ctx.obj.out
    if events:
        ctx.obj.start_events("box build", subject_key="box")
    spec = recipes.load(recipe)
    pinned = _pinned_packages(from_meta) if from_meta else None
    store = BoxStore()
    with event_stream(ctx, "box build", [spec.name], events, subject_key="box", show_output=False) as stream:
        box, built = build_box(
            spec, store, Reporter(stream, spec.name), force=force, mirror=mirror,
            cache_dir=vbox_cache() / "debootstrap", pinned=pinned,
        )
        stream.phase(spec.name, Phase.BUILT, f"{box.version} {box.digest[:19]}" + ("" if built else " (up to date)"))
    if built:
        seconds = box.meta.build_seconds
        out.success(f"built box {box.name} {box.version} in {seconds} s: {box.digest[:19]}, "
                    f"{format_size_human(box.size)}")
    else:
        out.success(f"box {box.name} {box.version} is up to date ({box.digest[:19]})")


def _pinned_packages(path: Path) -> list[str]:
    """The package list of a box.json, or of the manifest of a box archive."""
    import json as json_

    from vbox_cli.errors import UsageError

    try:
        if path.suffix == ".box":
            from boxes.archive import ArchiveError, open_archive, read_manifest

            try:
                raw, tar = open_archive(path)
                try:
                    meta = read_manifest(tar)["meta"]
                finally:
                    tar.close()
                    raw.close()
            except ArchiveError as exc:
                raise UsageError(f"{path}: {exc.message}") from None
        else:
            meta = json_.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise UsageError(f"{path} is not JSON (a box.json)") from None
    packages = meta.get("packages") if isinstance(meta, dict) else None
    if not isinstance(packages, list) or not all(isinstance(p, str) and "=" in p for p in packages) or not packages:
        raise UsageError(f"{path} lists no packages (a box built by an earlier vbox)",
                         hint="boxes built by this vbox list theirs in box.json")
    import re

    bad = [p for p in packages if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9]+)?=[A-Za-z0-9.+~:-]+", p)]
    if bad:
        raise UsageError(f"{path}: not package versions: {', '.join(bad[:3])}")
    return packages


@app.command("list")
def list_boxes(
    ctx: typer.Context,
    json: Annotated[bool, typer.Option("--json", help="Print the boxes as JSON.")] = False,
) -> None:
    """List the boxes in the store: name, version, digest, size, artefacts."""
    from boxes.store import BoxStore

    out = ctx.obj.out
    store = BoxStore()
    boxes = store.boxes()
    if json:
        out.json([
            {"name": b.name, "version": b.version, "digest": b.digest, "size": b.size, "artefacts": b.artefacts,
             "built": b.meta.built, "path": str(b.path), "used_by": store.users(b.name)}
            for b in boxes
        ])
        return
    if not boxes:
        out.line(f"no boxes in {store.root}; build one with `env box build debian-12`")
        return
    out.table(
        ["name", "version", "digest", "size", "artefacts", "built"],
        [(b.name, b.version, b.digest[:19], format_size_human(b.size), ",".join(b.artefacts), b.meta.built)
         for b in boxes],
    )


@app.command("remove")
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The box to remove.", autocompletion=complete.boxes)],
    version: Annotated[Optional[str], typer.Option("--version", help="Only this version.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Remove it even if machines use it.")] = False,
) -> None:
    """Remove a box from the store. Refuses while a machine uses it, unless --force.

    A normal user removes from her own store: a box of that name in the system's store
    stays (root removes it).
    """
    from boxes.store import BoxStore
    from vbox_cli.errors import UsageError

    out = ctx.obj.out
    store = BoxStore()
    targets = [b for b in store.boxes() if b.name == name and (version is None or b.version == version)]
    if not targets:
        raise UsageError(f"no box named {name!r}" + (f" version {version!r}" if version else ""),
                         hint="see `env box list`")
    own = [b for b in targets if b.path.is_relative_to(store.root)]
    if own and len(own) < len(targets):  # a user's own box beside root's of that name: hers is meant
        targets = own
    from vbox_cli.machines.status import prune_box_users

    for machine_id in prune_box_users(store, name):
        out.line(f"dropped the record of {machine_id}, which no longer exists")
    for box in targets:
        store.remove(box, force=force)
        out.success(f"removed box {box.name} {box.version}")
        if os.geteuid() == 0:  # KVM machines' memory images of it (providers/kvm_warm.py): system ones
            from providers.kvm_warm import forget

            if count := forget(box):
                out.line(f"removed the {count} memory image{'s' if count != 1 else ''} its KVM machines started from")


class ByteProgress:
    """A long copy's progress as phase events: at most every 2 % (a line each in plain
    output), with bytes done, in all, the rate and the time left."""

    def __init__(self, stream, subject: str, phase):
        self.stream, self.subject, self.phase = stream, subject, phase
        self.started = time.monotonic()
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        step = int(50 * done / total) if total else 50
        if step == self.shown:
            return
        self.shown = step
        from vbox_cli.events import byte_progress

        self.stream.phase(self.subject, self.phase, byte_progress(done, total, time.monotonic() - self.started))


@app.command("export")
def export(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The box to export.", autocompletion=complete.boxes)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The archive to write (default: "
                                                   "NAME-VERSION.box here).", metavar="FILE")] = None,
    version: Annotated[Optional[str], typer.Option("--version", help="This version (default: the newest).")] = None,
    events: Events = False,
) -> None:
    """Write a box to one archive file (zstd-compressed tar: every artefact, the root tree,
    the metadata and their digests), for `env box import` on another machine. Its sha256
    is printed and written beside it (FILE.sha256)."""
    import os

    from boxes import userns
    from boxes.archive import export as export_box
    from boxes.store import BoxStore
    from vbox_cli.commands.session import event_stream
    from vbox_cli.errors import UsageError
    from vbox_cli.events import Phase

    out = ctx.obj.out
    store = BoxStore()
    box = store.find(name, version)
    if box is None:
        raise UsageError(f"no box named {name!r}" + (f" version {version!r}" if version else ""),
                         hint="see `env box list`")
    if os.geteuid() != 0 and not userns.inside():
        if not box.path.is_relative_to(store.root):
            from vbox_cli.errors import VboxError

            raise VboxError(f"box {box.name} {box.version} is root's: its files are root's, some readable by root "
                            "only", hint="export it as root")
        import sys

        # her tree's owners are her subordinate ids: read, and digested, as her machines see them
        raise typer.Exit(userns.run(sys.argv[1:], machines_view=True))
    target = output or Path(f"{box.name.replace('/', '_')}-{box.version}.box")
    if target.is_dir():
        target = target / f"{box.name.replace('/', '_')}-{box.version}.box"
    if events:
        ctx.obj.start_events("box export", subject_key="box")
    with event_stream(ctx, "box export", [box.name], events, subject_key="box", show_output=False) as stream:
        try:
            sha256 = export_box(box, target, ByteProgress(stream, box.name, Phase.EXPORTING))
        except OSError as exc:
            from vbox_cli.errors import VboxError

            raise VboxError(f"cannot write {target}: {exc.strerror}") from None
        (target.parent / (target.name + ".sha256")).write_text(f"{sha256}  {target.name}\n")
        if userns.inside():
            userns.give_back(target, target.parent / (target.name + ".sha256"))
        stream.phase(box.name, Phase.EXPORTED, f"{target} sha256:{sha256[:12]}")
    out.success(f"exported box {box.name} {box.version} to {target} ({format_size_human(target.stat().st_size)}), "
                f"sha256 {sha256}")


@app.command("import")
def import_box(
    ctx: typer.Context,
    archive: Annotated[Path, typer.Argument(help="A box archive made by `env box export`, a Vagrant .box file "
                                                 "(libvirt or lxc provider), an OCI image archive (oci-archive, "
                                                 "docker-archive), or a cloud image (qcow2 with cloud-init).",
                                            metavar="FILE")],
    name: Annotated[Optional[str], typer.Option("--name", help="Import it under this name (a Vagrant box or an "
                                                                "image needs one: ORG/NAME or NAME).")] = None,
    version: Annotated[Optional[str], typer.Option("--version", help="A Vagrant box's or an image's version in "
                                                                      "the store (default 0).")] = None,
    user: Annotated[Optional[str], typer.Option("--user", help="Whom vbox logs in as (with sudo): default vagrant "
                                                                "for a Vagrant box, root for an OCI image, vbox "
                                                                "(made by cloud-init) for a cloud image.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a different box of the same name and version.")]
    = False,
    events: Events = False,
) -> None:
    """Add a box file to the store, checked first; nothing is written to the store unless
    every check passes.

    A vbox archive: every artefact's sha256, the box's digest and the root tree's digest
    must be those the exporter wrote, and no member may leave the box (absolute paths,
    "..", links on the way, devices, bombs). Importing the same box again does nothing.

    A Vagrant box (.box of the libvirt or lxc provider): its disk may name no other file,
    its root tree passes the same checks, and it must have an sshd and its user. Machines
    from it get the project's key instead of Vagrant's insecure one.

    An OCI image (LXC machines): its layers are applied with their whiteouts, each blob
    checked against its sha256; it must have an init and an sshd (vbox adds none).

    A cloud image (KVM machines): a qcow2 disk checked as a Vagrant box's; machines get
    their user, keys, name and address through a NoCloud seed."""
    import os

    from boxes import userns
    from boxes.archive import is_box_archive
    from boxes.store import BoxStore
    from boxes.cloud import is_cloud_image
    from boxes.oci import is_image
    from boxes.vagrant import DEFAULT_USER, is_vagrant_box
    from vbox_cli.commands.session import event_stream
    from vbox_cli.errors import UsageError
    from vbox_cli.events import Phase

    out = ctx.obj.out
    if not archive.is_file():
        raise UsageError(f"{archive}: no such file")
    if is_box_archive(archive):
        if version or user:
            raise UsageError("--version and --user are for Vagrant boxes: a vbox archive has its own")
        kind = "vbox"
    elif is_vagrant_box(archive):
        kind = "vagrant"
    elif is_image(archive):
        kind = "oci"
    elif is_cloud_image(archive):
        kind = "cloud"
    else:
        raise UsageError(f"{archive}: not a box file vbox knows",
                         hint="vbox imports its own archives (`env box export`), Vagrant .box files of the "
                              "libvirt and lxc providers, OCI images (oci-archive, docker-archive) and cloud images "
                              "(qcow2)")
    subject = name or archive.name
    if events:
        ctx.obj.start_events("box import", subject_key="box")
    store = BoxStore()
    with event_stream(ctx, "box import", [subject], events, subject_key="box", show_output=False) as stream:
        progress = ByteProgress(stream, subject, Phase.IMPORTING)
        options: dict = {"force": force, "progress": progress}
        if kind == "vbox":
            options.update(name=name, on_phase=lambda what: stream.phase(subject, Phase.VERIFYING,
                                                                         "sha256 and digests"))
        else:
            default_user = {"vagrant": DEFAULT_USER, "oci": "root", "cloud": "vbox"}[kind]
            options.update(name=name, version=version or "0", user=user or default_user,
                           on_phase=lambda what: stream.phase(subject, Phase.VERIFYING,
                                                              "the disk or tree" if kind == "vagrant" else what))
        if os.geteuid() != 0:
            stream.phase(subject, Phase.IMPORTING, "in your user namespace (the owners its machines see)")
        box = userns.import_box(kind, archive, store, **options)
        stream.phase(subject, Phase.IMPORTED, f"{box.name} {box.version} {box.digest[:19]}")
    out.success(f"imported box {box.name} {box.version} ({box.digest[:19]}) into {store.root}"
                + (f": {box.meta.description}, user {box.meta.user}" if kind != "vbox" else ""))


def format_size_human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


from vbox_cli.commands import box_catalog  # noqa: E402,F401 - its verbs join `env box`
