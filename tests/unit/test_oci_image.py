"""OCI images (boxes/oci.py) made here, small: layers applied in order with whiteouts and
opaque folders, from an OCI layout archive and a docker-archive; blobs that are not what
their digest says, trees without an sshd, and layers that reach out of the tree, refused
with nothing written to the store. The real image, up as an LXC machine, is in
tests/integration/test_foreign_boxes.py."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from boxes import oci
from boxes.archive import ArchiveError
from boxes.store import BoxStore
from tests.unit.test_vagrant_box import _info, nothing_written, tar_bytes, tree_members

D = tarfile.DIRTYPE


def layer(members, compress=True) -> bytes:
    return tar_bytes(members, compress=compress)


BASE = layer(tree_members("") + [(_info("etc/motd"), b"welcome\n"), (_info("opt", D), None),
                                 (_info("opt/app", D), None), (_info("opt/app/old.txt"), b"old\n"),
                                 (_info("etc/hostname"), b"base\n")])
TOP = layer([(_info("etc", D), None), (_info("etc/.wh.motd"), b""), (_info("opt/app", D), None),
             (_info("opt/app/.wh..wh..opq"), b""), (_info("opt/app/new.txt"), b"new\n"),
             (_info("etc/hostname"), b"top\n")])


def oci_archive(path: Path, layers: list[bytes], tamper: bool = False, platforms: bool = False) -> Path:
    blobs = {}

    def blob(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": f"sha256:{digest}", "size": len(data)}

    config = blob(json.dumps({"architecture": "amd64", "os": "linux"}).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(d)} for d in layers]}
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(json.dumps(manifest).encode())}
    if platforms:  # an index naming an index of two platforms
        arm = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "0" * 64,
               "size": 1, "platform": {"architecture": "arm64", "os": "linux"}}
        inner = {"schemaVersion": 2, "manifests": [arm, {**entry, "platform": {"architecture": "amd64",
                                                                                "os": "linux"}}]}
        entry = {"mediaType": "application/vnd.oci.image.index.v1+json", **blob(json.dumps(inner).encode())}
    if tamper:
        first = next(k for k, v in blobs.items() if v == layers[0])
        blobs[first] = blobs[first][:-10] + b"0" * 10
    members = [(_info("oci-layout"), b'{"imageLayoutVersion": "1.0.0"}'),
               (_info("index.json"), json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()),
               (_info("blobs", D), None), (_info("blobs/sha256", D), None)]
    members += [(_info(f"blobs/sha256/{k}"), v) for k, v in blobs.items()]
    path.write_bytes(tar_bytes(members, compress=False))
    return path


@pytest.fixture
def store(tmp_path):
    return BoxStore(tmp_path / "store")


@pytest.mark.parametrize("platforms", [False, True])
def test_layers_are_applied_with_their_whiteouts(store, tmp_path, platforms):
    path = oci_archive(tmp_path / "image.tar", [BASE, TOP], platforms=platforms)
    assert oci.is_image(path)
    box = oci.import_image(path, store, "team/app", version="1.0")
    root = box.artefact("rootfs")
    assert box.meta.user == "root" and box.artefacts == ["rootfs"]
    assert not (root / "etc/motd").exists()  # a whiteout
    assert sorted(p.name for p in (root / "opt/app").iterdir()) == ["new.txt"]  # an opaque folder
    assert (root / "etc/hostname").read_text() == "top\n"  # the upper layer's file
    assert (root / "etc/passwd").is_file() and not any(p.name.startswith(".wh.") for p in root.rglob("*"))


def test_a_docker_archive(store, tmp_path):
    members = [(_info("abc", D), None), (_info("abc/layer.tar"), layer(tree_members(""), compress=False)),
               (_info("def", D), None), (_info("def/layer.tar"), layer([(_info("etc/.wh.passwd"), b""),
                                                                       (_info("etc/passwd"), b"root:x:0:0::/root:x\n")],
                                                                      compress=False)),
               (_info("manifest.json"), json.dumps([{"Config": "c.json", "RepoTags": ["app:1"],
                                                    "Layers": ["abc/layer.tar", "def/layer.tar"]}]).encode())]
    path = tmp_path / "docker.tar"
    path.write_bytes(tar_bytes(members, compress=False))
    assert oci.is_image(path)
    box = oci.import_image(path, store, "app")
    assert (box.artefact("rootfs") / "etc/passwd").read_text() == "root:x:0:0::/root:x\n"


@pytest.mark.parametrize("case,layers,words", [
    ("no sshd", [layer([m for m in tree_members("") if not m[0].name.endswith("sshd")])], "apt-get install"),
    ("through a lower layer's link", [BASE, layer([(_info("host", tarfile.SYMTYPE, linkname="/etc"), None)]),
                                      layer([(_info("host/cron.d"), b"x")])], "link"),
    ("a whiteout of ..", [BASE, layer([(_info("etc/.wh.."), b"")])], "whiteout of no name"),
    ("out of the tree", [BASE, layer([(_info("../../etc/cron.d/x"), b"x")])], "leaves"),
])
def test_hostile_layers(store, tmp_path, case, layers, words):
    with pytest.raises(ArchiveError) as refused:
        oci.import_image(oci_archive(tmp_path / "i.tar", layers), store, "i")
    assert words in f"{refused.value.message} {refused.value.hint}"
    assert nothing_written(store)
    assert not Path("/etc/cron.d/x").exists()


def test_a_blob_that_is_not_its_digest(store, tmp_path):
    with pytest.raises(ArchiveError, match="does not have the sha256 its name gives"):
        oci.import_image(oci_archive(tmp_path / "t.tar", [BASE, TOP], tamper=True), store, "t")
    index = json.dumps({"manifests": [{"digest": "md5:abc"}]}).encode()
    (tmp_path / "m.tar").write_bytes(tar_bytes([(_info("index.json"), index)], compress=False))
    with pytest.raises(ArchiveError, match="sha256 only"):
        oci.import_image(tmp_path / "m.tar", store, "m")
    assert nothing_written(store)
