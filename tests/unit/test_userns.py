"""A normal user's box build: what runs it again in her user namespace, and what she lacks."""

from __future__ import annotations

import os
import sys

import pytest

from boxes import userns


def test_the_build_runs_again_with_the_users_own_store_and_a_root_of_its_own(monkeypatch, tmp_path):
    monkeypatch.setenv("VBOX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VBOX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", "/home/alice/bin:/usr/bin:/bin")
    command, env = userns.build_command(["--plain", "box", "build", "debian-12"])
    assert command[:3] == ["unshare", "--map-auto", "--map-root-user"]
    assert {"--mount", "--pid", "--fork", "--mount-proc", "--kill-child"} <= set(command)
    assert command[-6:] == [sys.executable, "-m", "vbox_cli", "--plain", "box", "build", "debian-12"][-6:]
    # inside, its uid is 0: without these it would take root's store and cache
    assert (env["VBOX_HOME"], env["VBOX_CACHE"]) == (str(tmp_path / "home"), str(tmp_path / "cache"))
    assert env[userns.MARK] == "1" and env["container"] == "lxc"
    assert env["PATH"].split(":")[-2:] == ["/usr/sbin", "/sbin"]  # debootstrap, chroot, mke2fs


def test_only_a_marked_root_is_inside(monkeypatch):
    monkeypatch.delenv(userns.MARK, raising=False)
    assert not userns.inside()
    monkeypatch.setenv(userns.MARK, "1")
    monkeypatch.setattr("os.geteuid", lambda: 1000)  # a user who set the mark herself is still herself
    assert not userns.inside()
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert userns.inside()


def test_what_a_user_lacks_is_said(monkeypatch, tmp_path):
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:100000:65536\n")
    subgid.write_text("")
    monkeypatch.setattr("pwd.getpwuid", lambda uid: type("E", (), {"pw_name": "alice"})())
    monkeypatch.setattr("providers.host.which", lambda tool: f"/usr/bin/{tool}")
    assert "subordinate ids" in userns.unavailable(1000, (subuid, subgid))
    subgid.write_text("alice:100000:65536\n")
    assert userns.unavailable(1000, (subuid, subgid)) is None
    monkeypatch.setattr("providers.host.which", lambda tool: None if tool.startswith("new") else f"/usr/bin/{tool}")
    assert userns.unavailable(1000, (subuid, subgid)) == "newuidmap and newgidmap missing (Debian's uidmap package)"


def test_root_imports_directly_with_what_the_importer_takes(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("boxes.archive.import_archive", lambda path, store, **kw: calls.append((path, kw)) or "box")
    assert userns.import_box("vbox", tmp_path / "a.box", object(), name="n", force=True) == "box"
    assert calls == [(tmp_path / "a.box", {"name": "n", "force": True})]


@pytest.mark.skipif(os.geteuid() != 0, reason="files of another owner need root")
def test_what_the_namespace_root_made_in_her_store_is_given_back_but_the_trees(tmp_path):
    from providers.subids import BOX_USER

    box = tmp_path / "debian-12" / "1"
    (box / "rootfs/etc").mkdir(parents=True)
    (box / "box.json").write_text("{}")
    (tmp_path / ".locks").mkdir()
    (tmp_path / ".locks/x.lock").touch()
    for path in (tmp_path, box / "box.json", box / "rootfs", box / "rootfs/etc", tmp_path / ".locks/x.lock"):
        os.chown(path, 0, 0)
    os.chown(tmp_path / "debian-12", 5, 0)  # another owner's stays; a group of 0 is given back
    userns.give_back_store(tmp_path)
    assert os.stat(box / "box.json").st_uid == BOX_USER and os.stat(tmp_path / ".locks/x.lock").st_gid == BOX_USER
    assert os.stat(tmp_path).st_uid == BOX_USER
    assert (os.stat(tmp_path / "debian-12").st_uid, os.stat(tmp_path / "debian-12").st_gid) == (5, BOX_USER)
    assert os.stat(box / "rootfs").st_uid == 0 and os.stat(box / "rootfs/etc").st_uid == 0
