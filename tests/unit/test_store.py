"""The box store's bookkeeping: staging, atomic install, sweeping after killed builds."""

from __future__ import annotations

import os
import subprocess
import sys

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
    store = BoxStore(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / STAGING).mkdir()
    stale = tmp_path / STAGING / f"b.{dead.pid}"
    (stale / "rootfs").mkdir(parents=True)
    live_pid = os.getppid()  # a process that is alive and is not us
    live = tmp_path / STAGING / f"c.{live_pid}"
    live.mkdir()
    removed = store.sweep_staging()
    assert removed == [stale] and not stale.exists() and live.exists()


def test_users_of_a_box(tmp_path):
    store = BoxStore(tmp_path)
    assert store.users("b") == []
    store.add_user("b", "vbox-p1-web", {"machine": "web"})
    store.add_user("b", "vbox-p2-db", {"machine": "db"})
    assert store.users("b") == ["vbox-p1-web", "vbox-p2-db"]
    store.remove_user("b", "vbox-p1-web")
    store.remove_user("b", "vbox-p1-web")
    assert store.users("b") == ["vbox-p2-db"]
