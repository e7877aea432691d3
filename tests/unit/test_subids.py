"""Subordinate ids and what an unprivileged LXC machine's config and folders make of them
(providers/subids.py, lxc_config.py, idmap.py): no root, no LXC."""

from __future__ import annotations

import pwd
from dataclasses import replace
from pathlib import Path

import pytest

from providers.subids import COUNT, FIRST, IdRange, allocate, entries, free_start, of_user
from tests.unit.test_templates import spec

ROOT = pwd.getpwuid(0).pw_name


def test_entries_skip_what_shadow_utils_skips(tmp_path):
    path = tmp_path / "subuid"
    path.write_text("alice:100000:65536\n# a comment\nbroken line\nbob:x:1\n0:165536:65536\n\n")
    assert entries(path) == [("alice", 100000, 65536), ("0", 165536, 65536)]
    assert entries(tmp_path / "none") == []


def test_a_user_is_found_by_name_or_number_with_a_range_big_enough(tmp_path):
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text(f"{ROOT}:300000:1000\n0:400000:{COUNT}\n")  # the first is too small for a machine
    subgid.write_text(f"{ROOT}:500000:{COUNT}\n")
    assert of_user(0, subuid, subgid) == IdRange(400000, 500000)
    subgid.write_text("")
    assert of_user(0, subuid, subgid) is None  # both are needed


def test_allocate_gives_root_a_free_aligned_range_in_both_files_once(tmp_path):
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:100000:65536\nbob:2000000:65536")  # no newline at the end
    subgid.write_text("alice:100000:65536\n")
    start = free_start(subuid, subgid)
    assert start == 2097152 and start % COUNT == 0 and start >= 2000000 + COUNT
    got = allocate(ROOT, subuid, subgid)
    assert got == IdRange(start, start)
    assert subuid.read_text() == f"alice:100000:65536\nbob:2000000:65536\n{ROOT}:{start}:{COUNT}\n"
    assert subgid.read_text() == f"alice:100000:65536\n{ROOT}:{start}:{COUNT}\n"
    assert allocate(ROOT, subuid, subgid) == got  # idempotent
    assert subuid.read_text().count(ROOT) == 1
    empty = tmp_path / "e"
    assert free_start(empty) == -(-FIRST // COUNT) * COUNT  # never below FIRST, even on an empty host


def test_id_range_lines_round_trip_and_bad_files_are_refused():
    ids = IdRange(1048576, 2097152)
    assert ids.lines() == "u 0 1048576 65536\ng 0 2097152 65536\n"
    assert IdRange.parse(ids.lines()) == ids
    assert ids.shift(1000, 1000) == (1049576, 2098152)
    for bad in ("u 0 1 65536\n", "u 5 1 65536\ng 0 1 65536\n", "u 0 1 10\ng 0 1 10\n", "x 0 1 65536\ng 0 1 65536\n",
                "u 0 1 65536\nu 0 2 65536\n"):
        with pytest.raises(ValueError):
            IdRange.parse(bad)


def test_folder_maps_send_the_owner_to_the_machine_users_host_id(monkeypatch, tmp_path):
    from providers.base import Share
    from providers.idmap import folder_maps, maps
    from boxes.store import Box

    (tmp_path / "box" / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / "box" / "rootfs" / "etc" / "passwd").write_text("vbox:x:1000:1000::/home/vbox:/bin/bash\n")
    box = Box("debian-12", "1", tmp_path / "box", {"digest": "sha256:0"})
    machine = replace(spec(monkeypatch), box=box, folders=(Share(Path("/p"), "/vbox"),), folder_owner=(1000, 1000))
    assert folder_maps(machine) == ("", "")  # privileged, same ids: a plain bind
    # unprivileged: the same owner is still mapped, into the machine's range
    assert folder_maps(machine, (1048576, 2097152)) == ("1000 1049576 1\n0 1048576 1\n",
                                                        "1000 2098152 1\n0 2097152 1\n")
    # a root-owned project: the machine's root writes as nobody
    assert maps(0, 1000, 1048576) == "0 1049576 1\n65534 1048576 1\n"


def test_an_unprivileged_machines_config(monkeypatch, tmp_path):
    from providers.base import Share
    from providers.lxc_config import IDS, render_config, staged

    folder = tmp_path / "vbox-demo-abc123-web"
    folder.mkdir()
    machine = replace(spec(monkeypatch), folders=(Share(Path("/home/me/p"), "/vbox"),), folder_owner=(1000, 1000))
    monkeypatch.setattr("providers.guest.user_ids", lambda box, user: (1000, 1000))
    privileged = render_config(machine, folder)
    assert "lxc.idmap" not in privileged and "lxc.rootfs.path = overlay:" in privileged
    assert "/home/me/p vbox none bind,create=dir 0 0" in privileged
    (folder / IDS).write_text(IdRange(1048576, 1048576).lines())
    text = render_config(machine, folder)
    lines = text.splitlines()
    assert "lxc.idmap = u 0 1048576 65536" in lines and "lxc.idmap = g 0 1048576 65536" in lines
    assert lines.index("lxc.include = /usr/share/lxc/config/userns.conf") == \
        lines.index("lxc.include = /usr/share/lxc/config/common.conf") + 1
    assert f"lxc.rootfs.path = dir:{folder}/rootfs" in lines
    # its folder from the staged place, mapped
    entry = f"{staged(folder, Path('/home/me/p'))} vbox none bind,create=dir,idmap={folder}/idmap 0 0"
    assert f"lxc.mount.entry = {entry}" in lines
    assert staged(folder, Path("/home/me/p")) != staged(folder, Path("/home/me/q"))
    (folder / IDS).write_text("u 0 0 1\n")
    from vbox_cli.errors import VboxError

    with pytest.raises(VboxError, match="not an id range"):
        render_config(machine, folder)


def test_drift_says_a_changed_unprivileged_needs_a_new_machine():
    from vbox_cli.machines.drift import drift

    record = {"host_key": "k", "provider": "lxc", "unprivileged": True}
    assert drift("web", {"unprivileged": False}, record) == [
        "unprivileged true -> false: `env destroy web` and `env up web`"]
    assert drift("web", {"unprivileged": True}, record) == []
    assert drift("web", {"unprivileged": True}, {"host_key": "k", "provider": "lxc"}) == []  # made before the key
    assert drift("vm", {"unprivileged": True}, {**record, "provider": "kvm", "unprivileged": False}) == []


def test_a_machine_keeps_the_kind_it_was_made_with(tmp_path, monkeypatch):
    from providers.lxc import LxcProvider
    from providers.lxc_config import CONFIG, IDS

    provider = LxcProvider(tmp_path)
    machine = spec(monkeypatch).machine.model_copy(update={"unprivileged": True})
    assert provider.refuses("vbox-demo-abc123-web", machine) is None  # not made yet: it will be made so
    folder = tmp_path / "vbox-demo-abc123-web"
    folder.mkdir()
    (folder / CONFIG).write_text("lxc.uts.name = web\n")
    refused = provider.refuses("vbox-demo-abc123-web", machine)
    assert refused is not None and refused.message.startswith("web was made privileged; unprivileged = true")
    (folder / IDS).write_text(IdRange(1048576, 1048576).lines())
    assert provider.refuses("vbox-demo-abc123-web", machine) is None
    privileged = machine.model_copy(update={"unprivileged": False})
    assert "was made unprivileged" in provider.refuses("vbox-demo-abc123-web", privileged).message
