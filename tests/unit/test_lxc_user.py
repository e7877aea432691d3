"""A normal user's LXC machines (providers/lxc_user.py, subids.UserMap, userns.hand_over):
her machines' id map, her bridges in lxc-usernet, her delegated cgroups, and the tree her
build hands over. No LXC; hand_over's chowns need root (skipped without)."""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from boxes import userns
from providers import lxc_user
from providers.subids import BOX_USER, COUNT, IdRange, UserMap
from vbox_cli.errors import VboxError

MAP = UserMap(IdRange(100000, 200000), uid=1001, gid=1002)


def test_her_machines_map_is_her_builds_map_with_root_and_the_box_user_swapped():
    """The build's namespace (`unshare --map-auto --map-root-user`): 0 is her, n is her
    subordinate id n-1. Her machines see the same owners once 0 and 1000 are swapped."""
    def build(inside: int, kind: str) -> int:
        own, first = (1001, 100000) if kind == "u" else (1002, 200000)
        return own if inside == 0 else first + inside - 1

    for kind in "ug":
        ranges = MAP.ranges(kind)
        assert sum(count for _, _, count in ranges) == COUNT
        seen = {}
        for inside, outside, count in ranges:
            for i in range(count):
                seen[inside + i] = outside + i
        assert sorted(seen) == list(range(COUNT))
        swapped = {0: BOX_USER, BOX_USER: 0}
        # every id but the last of the range (the build maps 65535 ids besides her own)
        assert all(seen[i] == build(swapped.get(i, i), kind) for i in range(COUNT - 1))
    assert MAP.host_uid(0) == 100000 + BOX_USER - 1 and MAP.host_uid(BOX_USER) == 1001
    assert MAP.lxc_lines()[:4] == ["u 0 100999 1", "u 1 100000 999", "u 1000 1001 1", "u 1001 101000 64535"]
    assert MAP.lxc_lines()[6] == "g 1000 1002 1"
    args = MAP.usernsexec_args()
    assert args[:4] == ["-m", "u:0:100999:1", "-m", "u:1:100000:999"] and len(args) == 16
    with pytest.raises(ValueError):
        MAP.host_uid(COUNT)


def test_her_bridges_are_her_own_and_doctor_adds_them_once(tmp_path):
    usernet = tmp_path / "lxc-usernet"
    usernet.write_text("# kept\nbob veth lxcbr0 10\n")
    pool = lxc_user.bridges("alice")
    assert len(pool) == lxc_user.POOL and len(set(pool)) == lxc_user.POOL
    assert all(len(name) <= 15 and name.startswith("vbu") for name in pool)
    assert set(pool).isdisjoint(lxc_user.bridges("bob"))
    assert lxc_user.allowed("alice", usernet) == set()
    lxc_user.allow("alice", usernet)
    lxc_user.allow("alice", usernet)  # once
    text = usernet.read_text()
    assert text.startswith("# kept\nbob veth lxcbr0 10\n") and text.count("alice veth") == lxc_user.POOL
    assert lxc_user.allowed("alice", usernet) == set(pool)
    assert lxc_user.allowed("bob", usernet) == {"lxcbr0"}
    # another user's lines, or a group's, are not hers
    usernet.write_text("@alice veth x 1\nalicex veth y 1\nalice veth z notanumber\n")
    assert lxc_user.allowed("alice", usernet) == set()


def test_a_free_bridge_is_one_no_network_has(monkeypatch):
    pool = lxc_user.bridges("alice")
    monkeypatch.setattr(lxc_user, "allowed", lambda user, path=None: set(pool))
    assert lxc_user.free_bridge("alice", set()) == pool[0]
    assert lxc_user.free_bridge("alice", {pool[0], pool[1]}) == pool[2]
    with pytest.raises(VboxError, match="every bridge"):
        lxc_user.free_bridge("alice", set(pool))
    monkeypatch.setattr(lxc_user, "allowed", lambda user, path=None: {pool[3]})
    assert lxc_user.free_bridge("alice", set()) == pool[3]  # only what lxc-usernet lets her join


def _cgroups(root: Path) -> None:
    """A v1 layout: memory, cpuset (its CPUs set), a named hierarchy; and a v2 mount."""
    for name in ("memory", "cpuset", "systemd"):
        (root / name).mkdir(parents=True)
        (root / name / "cgroup.procs").write_text("")
    (root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    (root / "cpuset" / "cpuset.mems").write_text("0\n")
    (root / "unified").mkdir()
    (root / "unified" / "cgroup.procs").write_text("")
    (root / "unified" / "cgroup.controllers").write_text("")


def test_her_cgroups_are_made_hers_in_each_v1_hierarchy(monkeypatch, tmp_path):
    _cgroups(tmp_path)
    me = os.getuid()
    monkeypatch.setattr("pwd.getpwnam", lambda name: SimpleNamespace(pw_uid=me, pw_gid=os.getgid()))
    assert [p.name for p in lxc_user.hierarchies(tmp_path)] == ["cpuset", "memory", "systemd"]
    assert len(lxc_user.undelegated("alice", tmp_path)) == 3

    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):  # the kernel gives a new group its files
        real_mkdir(self, *args, **kwargs)
        for name in ("cgroup.procs", "tasks", "memory.limit_in_bytes"):
            (self / name).touch()
        if self.parent.name == "cpuset":
            (self / "cpuset.cpus").write_text("")
            (self / "cpuset.mems").write_text("")

    monkeypatch.setattr(Path, "mkdir", mkdir)
    lxc_user.delegate("alice", tmp_path)
    assert lxc_user.undelegated("alice", tmp_path) == []
    assert (tmp_path / "cpuset/vbox-alice/cpuset.cpus").read_text() == "0-3\n"
    assert not (tmp_path / "unified/vbox-alice").exists()
    # another uid's groups are not hers
    monkeypatch.setattr("pwd.getpwnam", lambda name: SimpleNamespace(pw_uid=me + 1, pw_gid=os.getgid()))
    assert len(lxc_user.undelegated("alice", tmp_path)) == 3


def test_a_capability_is_made_version_3_for_the_machines_root():
    v2 = struct.pack("<IIIII", 0x02000001, 0x2000, 0, 0, 0)  # cap_net_raw=ep, as setcap writes it
    v3 = userns.capability_v3(v2, BOX_USER)
    assert len(v3) == 24 and struct.unpack("<IIIIII", v3) == (0x03000001, 0x2000, 0, 0, 0, BOX_USER)
    assert userns.capability_v3(v3, 7)[-4:] == struct.pack("<I", 7)
    with pytest.raises(ValueError):
        userns.capability_v3(b"\x01\x00\x00\x01" + bytes(8), 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to other owners needs root")
def test_hand_over_swaps_root_and_the_box_user_and_keeps_set_id_bits(tmp_path):
    tree = tmp_path / "rootfs"
    (tmp_path / "rootfs/usr/bin").mkdir(parents=True)
    (tmp_path / "rootfs/home/vbox").mkdir(parents=True)
    sudo = tree / "usr/bin/sudo"
    sudo.write_text("x")
    os.chmod(sudo, 0o4755)
    os.link(sudo, tree / "usr/bin/sudo-link")  # one inode: swapped once
    os.chown(tree / "home/vbox", BOX_USER, BOX_USER)
    (tree / "etc").mkdir()
    (tree / "etc/shadow").write_text("")
    os.chown(tree / "etc/shadow", 0, 42)
    os.symlink("usr/bin", tree / "bin")
    userns.hand_over(tree)
    owners = {p.relative_to(tree).as_posix(): (p.lstat().st_uid, p.lstat().st_gid) for p in tree.rglob("*")}
    assert owners["home/vbox"] == (0, 0) and owners["usr/bin/sudo"] == (BOX_USER, BOX_USER)
    assert owners["etc/shadow"] == (BOX_USER, 42) and owners["bin"] == (BOX_USER, BOX_USER)
    assert os.stat(tree).st_uid == BOX_USER
    assert os.stat(sudo).st_mode & 0o7777 == 0o4755


def test_what_her_machine_cannot_have_is_said_before_it_is_made(monkeypatch, tmp_path):
    tree = tmp_path / "rootfs"
    tree.mkdir()
    pool = lxc_user.bridges("alice")
    monkeypatch.setattr("providers.users.user_name", lambda uid=None: "alice")
    monkeypatch.setattr(lxc_user, "allowed", lambda user, path=None: set(pool))
    monkeypatch.setattr(lxc_user, "handed_over", lambda path, umap: path == tree)
    box = SimpleNamespace(name="debian-12", version="12.0.12", artefact=lambda kind: tree,
                          meta=SimpleNamespace(features=[]))
    machine = SimpleNamespace(name="web", disk_set=False)
    spec = SimpleNamespace(machine=machine, box=box, bridge=pool[0], networks=())
    lxc_user.check_spec(spec, MAP)
    roots = replace_box(box, tmp_path / "elsewhere")
    with pytest.raises(VboxError, match="root's box") as refused:
        lxc_user.check_spec(SimpleNamespace(**{**vars(spec), "box": roots}), MAP)
    assert "`env box build debian-12`" in refused.value.hint
    lxc_user.check_spec(SimpleNamespace(**{**vars(spec), "box": roots}), None)  # a start: not checked again
    with pytest.raises(VboxError, match="lxc-usernet") as refused:
        lxc_user.check_spec(SimpleNamespace(**{**vars(spec), "bridge": "vbx-12345678"}), MAP)
    assert "env destroy" in refused.value.hint  # a network made before she had bridges
    with pytest.raises(VboxError, match="joins the project network only"):
        lxc_user.check_spec(SimpleNamespace(**{**vars(spec), "networks": (object(),)}), MAP)
    with pytest.raises(VboxError, match="`disk` needs root"):
        lxc_user.check_spec(SimpleNamespace(**{**vars(spec), "machine": replace_ns(machine, disk_set=True)}), MAP)


def replace_box(box, tree: Path):
    return SimpleNamespace(**{**vars(box), "artefact": lambda kind: tree})


def replace_ns(ns, **changes):
    return SimpleNamespace(**{**vars(ns), **changes})


def test_her_machines_config_maps_her_ids_and_lets_lxc_mount_its_overlay(monkeypatch, tmp_path):
    from providers.base import Share
    from providers.lxc_config import folder_ids_maps, render_config
    from tests.unit.test_templates import spec

    folder = tmp_path / "vbox-demo-abc123-web"
    folder.mkdir()
    machine = replace(spec(monkeypatch), folders=(Share(Path("/home/alice/p"), "/vbox"),), folder_owner=(1001, 1002))
    monkeypatch.setattr("providers.guest.user_ids", lambda box, user: (1000, 1000))
    (folder / lxc_user.USERMAP).write_text("\n".join(MAP.lxc_lines()) + "\n")
    lines = render_config(machine, folder).splitlines()
    assert [line for line in lines if line.startswith("lxc.idmap")] == [f"lxc.idmap = {x}" for x in MAP.lxc_lines()]
    assert "lxc.include = /usr/share/lxc/config/userns.conf" in lines
    assert any(line.startswith("lxc.rootfs.path = overlay:") for line in lines)
    assert not any("veth.pair" in line for line in lines)  # lxc-user-nic names it
    # her folder as it is: its owner is the machine's user already, and she cannot idmap
    assert folder_ids_maps(machine, folder) == ("", "")
    assert "lxc.mount.entry = /home/alice/p vbox none bind,create=dir 0 0" in lines


def test_her_project_network_takes_a_free_bridge_of_hers_and_keeps_it(monkeypatch):
    """libvirt's test driver: its `default` network is virbr0; her pool's first bridge is
    taken by a network of another project of hers."""
    import libvirt

    from providers import network

    conn = libvirt.open("test:///default")
    pool = lxc_user.bridges("alice")
    conn.networkCreateXML(f"<network><name>vbox-other</name><bridge name='{pool[0]}'/></network>")

    class Project:
        id = "demo-abc123"
        state: dict = {}

        def load_state(self):
            return self.state

        def update_state(self, change):
            change(self.state)

    monkeypatch.setattr("os.geteuid", lambda: 1500)
    monkeypatch.setattr("providers.users.user_name", lambda uid=None: "alice")
    monkeypatch.setattr(network, "used_subnets", lambda conn: [])
    monkeypatch.setattr(lxc_user, "allowed", lambda user, path=None: set())
    project = Project()
    assert network.plan(project, conn).bridge == network.bridge_name(project.id)  # no bridges of hers: as before
    monkeypatch.setattr(lxc_user, "allowed", lambda user, path=None: set(pool))
    first = network.plan(project, conn)
    assert first.bridge == pool[1] and project.state["network"]["bridge"] == pool[1]
    conn.networkCreateXML(f"<network><name>vbox-third</name><bridge name='{pool[2]}'/></network>")
    assert network.plan(project, conn).bridge == pool[1]  # kept
    network.ensure(conn, first, {})
    project.state["network"]["bridge"] = "changed"  # the network's own bridge wins while it exists
    assert network.plan(project, conn).bridge == pool[1]


def test_a_refusal_names_the_machine_with_its_article():
    from providers.base import a

    assert a("LXC container") == "an LXC container" and a("KVM machine") == "a KVM machine"
    assert a("Xen guest") == "a Xen guest" and a("emulated host") == "an emulated host"
