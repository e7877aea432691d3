"""The box store's bookkeeping: staging, atomic install, sweeping after killed builds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from boxes.store import META, STAGING, BoxStore


def test_install_is_a_rename_and_replaces_an_older_build(tmp_path):
    store = BoxStore(tmp_path)
    first = store.staging("b")
    (first / "vmlinuz").write_text("one")
    box = store.install(first, "b", "1", {"digest": "sha256:1", "built": "1"})
    assert not first.exists()
    assert (box.path / META).is_file() and box.artefacts == ["kernel"]
    second = store.staging("b")
    (second / "vmlinuz").write_text("two")
    store.install(second, "b", "1", {"digest": "sha256:2", "built": "2"})
    assert store.get("b").digest == "sha256:2"
    assert (store.get("b").path / "vmlinuz").read_text() == "two"
    assert list((tmp_path / STAGING).iterdir()) == []


def test_find_picks_the_newest_version(tmp_path):
    store = BoxStore(tmp_path)
    store.install(store.staging("b"), "b", "1", {"digest": "sha256:1", "built": "2026-01-01"})
    store.install(store.staging("b"), "b", "2", {"digest": "sha256:2", "built": "2026-02-01"})
    assert store.find("b").version == "2"
    assert store.find("b", "1").digest == "sha256:1"
    assert store.find("c") is None


def test_sweep_removes_staging_of_dead_builds_only(tmp_path):
    """A build holds a lock on its staging folder: another process's live build (here one
    that is pid 1 of its own PID namespace, as a user's build is, like every other of hers)
    stays; a killed build's folder, and one no build holds, go."""
    store = BoxStore(tmp_path)
    mine = store.staging("a")
    holder = subprocess.Popen(
        ["unshare", "--pid", "--fork", sys.executable, "-c",
         "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from boxes.store import BoxStore; "
         "print(BoxStore(Path(sys.argv[2])).staging('b'), flush=True); sys.stdin.read()",
         str(Path(__file__).resolve().parents[2]), str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        other = Path(holder.stdout.readline().strip())
        assert other.name.startswith("b.1.")  # pid 1 in its namespace
        orphan = tmp_path / STAGING / "c.1.dead"  # a killed build: its lock went with it
        (orphan / "rootfs").mkdir(parents=True)
        assert store.sweep_staging() == [orphan]
        assert mine.exists() and other.exists() and not orphan.exists()
    finally:
        holder.stdin.close()
        holder.wait()
    assert store.sweep_staging() == [other] and mine.exists()  # its build ended without cleaning up


def test_users_of_a_box(tmp_path):
    store = BoxStore(tmp_path)
    assert store.users("b") == []
    store.add_user("b", "vbox-p1-web", {"machine": "web"})
    store.add_user("b", "vbox-p2-db", {"machine": "db"})
    assert store.users("b") == ["vbox-p1-web", "vbox-p2-db"]
    store.remove_user("b", "vbox-p1-web")
    store.remove_user("b", "vbox-p1-web")
    assert store.users("b") == ["vbox-p2-db"]
