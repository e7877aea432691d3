"""Box archives (`env box export` / `import`) on a small box made here: a round trip gives
an identical box, and every damaged or hostile archive is refused with nothing written
to the store (no box, no staging folder, nothing outside)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from boxes import archive
from boxes.build import _digest
from boxes.store import STAGING, BoxStore
from boxes.tree import tree_digest


def make_box(store: BoxStore, name: str = "tiny", version: str = "1.0") -> object:
    staged = store.staging(name)
    (staged / "disk.qcow2").write_bytes(os.urandom(300_000))
    (staged / "vmlinuz").write_bytes(b"kernel" * 1000)
    (staged / "initrd.img").write_bytes(b"initrd" * 1000)
    root = staged / "rootfs"
    for folder in ("etc", "usr/bin", "dev", "usr/lib/systemd/system"):
        (root / folder).mkdir(parents=True)
    (root / "etc/hostname").write_text("tiny\n")
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "usr/bin/tool", 0o4755)  # setuid, as sudo is
    os.chown(root / "etc/hostname", 1000, 1000)
    os.link(root / "usr/bin/tool", root / "usr/bin/tool2")
    os.symlink("/proc/self/fd", root / "dev/fd")  # absolute: it points inside the machine
    os.symlink("usr/bin", root / "bin")
    (root / "usr/lib/systemd/system/system-a\\x2db.slice").write_text("[Unit]\n")
    os.mknod(root / "dev/null", 0o666 | 0o020000, os.makedev(1, 3))
    os.setxattr(root / "usr/bin/tool", "security.capability",
                base64.b64decode("AQAAAgAgAAAAAAAAAAAAAAAAAAA="))
    meta = {"digest": f"sha256:{_digest(staged)}", "name": name, "version": version, "user": "vbox"}
    return store.install(staged, name, version, meta)


@pytest.fixture
def stores(tmp_path):
    return BoxStore(tmp_path / "from"), BoxStore(tmp_path / "to")


def test_round_trip_is_identical(stores, tmp_path):
    source, target = stores
    box = make_box(source)
    sha = archive.export(box, tmp_path / "tiny.box")
    assert sha == hashlib.sha256((tmp_path / "tiny.box").read_bytes()).hexdigest()
    copy = archive.import_archive(tmp_path / "tiny.box", target)
    assert (copy.name, copy.version, copy.digest) == (box.name, box.version, box.digest)
    assert tree_digest(copy.artefact("rootfs")) == tree_digest(box.artefact("rootfs"))
    rootfs = copy.artefact("rootfs")
    assert os.stat(rootfs / "usr/bin/tool").st_mode & 0o7777 == 0o4755
    assert os.stat(rootfs / "usr/bin/tool").st_ino == os.stat(rootfs / "usr/bin/tool2").st_ino
    assert os.readlink(rootfs / "dev/fd") == "/proc/self/fd"
    assert os.stat(rootfs / "etc/hostname").st_uid == 1000
    assert os.getxattr(rootfs / "usr/bin/tool", "security.capability")
    assert os.major(os.stat(rootfs / "dev/null").st_rdev) == 1  # made by the import, not taken from the file
    # the same box again: nothing to do; under another name: a second box
    assert archive.import_archive(tmp_path / "tiny.box", target).path == copy.path
    other = archive.import_archive(tmp_path / "tiny.box", target, name="tiny-copy")
    assert other.name == "tiny-copy" and other.digest == box.digest


def test_a_box_with_links_for_device_names_round_trips(stores, tmp_path):
    """A box built since builder 10 has no node in /dev, and /dev/ptmx is a link: the
    export lists no device for the import to make over it."""
    from boxes.reproducible import reset_dev

    source, target = stores
    box = make_box(source, name="linked")
    reset_dev(box.artefact("rootfs"))
    archive.export(box, tmp_path / "linked.box")
    copy = archive.import_archive(tmp_path / "linked.box", target)
    assert os.readlink(copy.artefact("rootfs") / "dev/ptmx") == "pts/ptmx"
    assert not any(stat.S_ISCHR(os.lstat(p).st_mode) for p in (copy.artefact("rootfs") / "dev").iterdir())
    assert tree_digest(copy.artefact("rootfs")) == tree_digest(box.artefact("rootfs"))


# -- hostile and damaged archives ---------------------------------------------------------
def write_archive(path: Path, manifest: dict | None, members: list[tuple[tarfile.TarInfo, bytes | None]],
                  level: int = 3) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if manifest is not None:
            data = json.dumps(manifest).encode()
            info = tarfile.TarInfo(archive.MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(zstandard.ZstdCompressor(level=level).compress(raw.getvalue()))
    return path


def member(name: str, data: bytes | None = b"x", kind=tarfile.REGTYPE, linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    if data is not None and kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data if kind == tarfile.REGTYPE else None


MANIFEST = {"format": 1, "name": "evil", "version": "1", "meta": {"digest": "sha256:0", "user": "vbox"},
            "files": {}, "tree": None, "devices": [], "size": 1000}
ROOT = member("rootfs", None, tarfile.DIRTYPE)


def assert_refused(path: Path, store: BoxStore, words: str, outside: Path | None = None) -> None:
    with pytest.raises(archive.ArchiveError) as info:
        archive.import_archive(path, store)
    assert words in info.value.message, info.value.message
    assert "nothing was written" in (info.value.hint or "")
    assert store.boxes() == []
    staging = store.root / STAGING
    assert not staging.exists() or list(staging.iterdir()) == []
    if outside is not None:
        assert not outside.exists()


@pytest.mark.parametrize("case, members, words", [
    ("parent", [ROOT, member("rootfs/../../escaped")], "leaves the box"),
    ("absolute", [ROOT, member("/tmp/vbox-absolute-escape")], "leaves the box"),
    ("unknown", [member("etc/passwd")], "does not know"),
    ("device", [ROOT, member("rootfs/sda", None, tarfile.BLKTYPE)], "device"),
    ("fifo", [ROOT, member("rootfs/pipe", None, tarfile.FIFOTYPE)], "device, FIFO"),
    ("twice", [ROOT, member("rootfs/a"), member("rootfs/a")], "comes twice"),
    ("through a link", [ROOT, member("rootfs/etc", None, tarfile.SYMTYPE, "/etc"), member("rootfs/etc/cron.d/x")],
     "a link on its way"),
    ("hard link out", [ROOT, member("rootfs/shadow", None, tarfile.LNKTYPE, "/etc/shadow")], "hard link"),
    ("disk as a link", [member("disk.qcow2", None, tarfile.SYMTYPE, "/etc/shadow")], "not a regular file"),
])
def test_hostile_members(stores, tmp_path, case, members, words):
    _, target = stores
    manifest = {**MANIFEST, "files": {"disk.qcow2": "0" * 64} if case == "disk as a link" else {}}
    path = write_archive(tmp_path / "evil.box", manifest, members)
    assert_refused(path, target, words, outside=Path("/tmp/vbox-absolute-escape"))


def test_attributes_a_box_may_not_have(stores, tmp_path):
    _, target = stores
    info, data = member("rootfs/x")
    info.pax_headers = {archive.XATTR_KEY + "trusted.overlay.redirect": base64.b64encode(b"/etc").decode()}
    assert_refused(write_archive(tmp_path / "x.box", MANIFEST, [ROOT, (info, data)]), target, "trusted.overlay")


def test_not_an_archive_or_no_manifest(stores, tmp_path):
    _, target = stores
    (tmp_path / "plain.box").write_bytes(b"hello")
    assert_refused(tmp_path / "plain.box", target, "zstd")
    assert_refused(write_archive(tmp_path / "none.box", None, [ROOT]), target, "does not begin with")
    manifest = {**MANIFEST, "format": 99}
    assert_refused(write_archive(tmp_path / "future.box", manifest, [ROOT]), target, "another format")


def test_a_bomb(stores, tmp_path):
    """A gigabyte of zeros compresses to almost nothing: refused long before it is written."""
    _, target = stores
    manifest = {**MANIFEST, "size": 2 * 1024**3}
    info = tarfile.TarInfo("rootfs/zeros")
    info.size = 1024**3
    raw_path = tmp_path / "bomb.tar"
    with tarfile.open(raw_path, "w", format=tarfile.PAX_FORMAT) as tar:
        data = json.dumps(manifest).encode()
        head = tarfile.TarInfo(archive.MANIFEST)
        head.size = len(data)
        tar.addfile(head, io.BytesIO(data))
        tar.addfile(ROOT[0])

        class Zeros(io.RawIOBase):
            def readinto(self, buffer):
                buffer[:] = bytes(len(buffer))
                return len(buffer)

        tar.addfile(info, Zeros())
    with open(raw_path, "rb") as src, open(tmp_path / "bomb.box", "wb") as dst:
        zstandard.ZstdCompressor(level=19).copy_stream(src, dst)
    raw_path.unlink()
    assert (tmp_path / "bomb.box").stat().st_size < 1024**2
    assert_refused(tmp_path / "bomb.box", target, "archive bomb")


def test_more_than_declared(stores, tmp_path):
    _, target = stores
    assert_refused(write_archive(tmp_path / "big.box", {**MANIFEST, "size": 10},
                                 [ROOT, member("rootfs/a", os.urandom(100))]), target, "declares")


def test_damaged_and_truncated(stores, tmp_path):
    source, target = stores
    box = make_box(source)
    archive.export(box, tmp_path / "tiny.box")
    data = (tmp_path / "tiny.box").read_bytes()
    (tmp_path / "cut.box").write_bytes(data[: len(data) // 2])
    assert_refused(tmp_path / "cut.box", target, "truncated")
    # the disk changed after export, manifest and all rebuilt around it: the box's digest says no
    disk = box.artefact("disk")
    data = disk.read_bytes()
    disk.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # its first byte changed, whatever it was
    archive.export(box, tmp_path / "altered.box")
    assert_refused(tmp_path / "altered.box", target, "digest")


def test_outdated_update_and_prune(stores, tmp_path):
    """A box from a catalog folder: a newer version there is listed and fetched; prune
    keeps the newest and what a machine uses, and removes the rest."""
    from boxes import catalog, upkeep
    from boxes.versions import Constraint

    source, store = stores
    for version in ("1.0", "1.1"):
        archive.export(make_box(source, "team/tiny", version), tmp_path / f"tiny-{version}.box")
        catalog.publish(tmp_path / f"tiny-{version}.box", tmp_path / "www")
    where = catalog.locate(str(tmp_path / "www"))
    old = catalog.obtain(store, "team/tiny", where, Constraint("< 1.1"), tmp_path / "cache")
    assert old.version == "1.0" and old.meta.source["catalog"].endswith("team/tiny.json")
    assert [(o.name, o.have, o.newest) for o in upkeep.outdated(store)] == [("team/tiny", "1.0", "1.1")]
    catalog.obtain(store, "team/tiny", where, Constraint(""), tmp_path / "cache")
    assert upkeep.outdated(store) == []
    assert [b.version for b in upkeep.prunable(store)] == ["1.0"]
    store.add_user("team/tiny", "vbox-p-web", {"version": "1.0"})  # a machine made from 1.0
    assert upkeep.prunable(store) == []
    store.remove_user("team/tiny", "vbox-p-web")
    store.add_user("team/tiny", "vbox-p-db", {})  # a record of an earlier vbox: keeps every version
    assert upkeep.prunable(store) == []


def test_a_ten_gigabyte_sparse_bomb(stores, tmp_path):
    """A 10 GB sparse file: GNU tar stores its holes as a map, a few KB in all. Refused as a
    sparse member (vbox writes none), in a box archive and in a Vagrant box's tree."""
    import subprocess

    from boxes import vagrant
    from tests.unit.test_vagrant_box import lxc_box

    _, target = stores
    tree = tmp_path / "tree"
    (tree / "rootfs").mkdir(parents=True)
    (tree / archive.MANIFEST).write_text(json.dumps({**MANIFEST, "size": 11 * 1024**3}))
    with open(tree / "rootfs/huge", "wb") as f:
        f.truncate(10 * 1024**3)
    plain = tmp_path / "bomb.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(plain), "-C", str(tree), archive.MANIFEST,
                    "rootfs"], check=True)
    assert plain.stat().st_size < 1024**2
    with open(plain, "rb") as src, open(tmp_path / "bomb.box", "wb") as dst:
        zstandard.ZstdCompressor().copy_stream(src, dst)
    assert_refused(tmp_path / "bomb.box", target, "sparse member")
    rootfs = tmp_path / "rootfs.tar.gz"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-czf", str(rootfs), "-C", str(tree), "./rootfs"], check=True)
    with pytest.raises(archive.ArchiveError, match="sparse member"):
        vagrant.import_vagrant(lxc_box(tmp_path / "v.box", rootfs.read_bytes()), target, "v")
    assert target.boxes() == []
