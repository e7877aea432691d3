"""A normal user's LXC machines: unprivileged containers of hers, started by her own
lxc-start in her container path (~/.local/share/vbox/lxc).

- **Ids.** Their root is one of her subordinate ids and their user (1000) is her own uid
  (providers/subids.UserMap): the files that user writes in a synced folder are hers. Their
  root tree is a box of her own store, whose owners her build gave that map
  (boxes/userns.hand_over); root's boxes have root's owners, which no map of hers reaches.
  LXC mounts the overlay itself, in her user namespace. What vbox writes into a machine's
  layer it writes from that namespace too (`write_layer`), with the machine's owners.
- **Network.** lxc-user-nic (setuid, LXC's) puts the veth on a bridge that
  /etc/lxc/lxc-usernet allows her. Root allows each user a pool of bridge names
  (`bridges`); each of her project networks takes a free one (providers/network.plan).
- **cgroups.** lxc-start makes the container's cgroups under its own, which must be hers.
  On a host without systemd nothing delegates one to her: `env doctor --fix --user NAME`
  makes /sys/fs/cgroup/<controller>/vbox-<user> in each cgroup v1 hierarchy, hers (the
  folder, cgroup.procs and tasks; cpuset gets its parent's CPUs and memory nodes), and her
  vbox moves itself in before it runs lxc-start. Why that is safe: the group's own limit
  files stay root's, so she cannot raise its limits (and root may set them, to cap all her
  machines at once); v1's memory and cpuset hierarchies keep every child within its
  parent; v1 lets a process move only processes of its own uid; and the devices
  controller takes new rules only from CAP_SYS_ADMIN of the host's user namespace, so no
  device is opened to her. The folders are gone after a host restart: doctor says so, and
  --fix makes them again. (A cgroup v2 host delegates through systemd's user@.service.)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from vbox_cli import proc
from vbox_cli.errors import VboxError

USERMAP = "usermap"  # in a machine's folder: it is a user's machine, its owners in this map
USERNET = Path("/etc/lxc/lxc-usernet")
POOL = 16  # project networks with LXC machines a user may have at once
VETHS = 32  # machines of one project network
CGROUPS = Path("/sys/fs/cgroup")


def is_user() -> bool:
    return os.geteuid() != 0


# -- bridges: /etc/lxc/lxc-usernet ------------------------------------------------------
def bridges(user: str) -> list[str]:
    """Her pool of bridge names (10 characters: an interface name takes 15)."""
    key = hashlib.sha256(user.encode()).hexdigest()[:6]
    return [f"vbu{key}{i:x}" for i in range(POOL)]


def allowed(user: str, path: Path = USERNET) -> set[str]:
    """The bridges lxc-usernet lets her put veths on (her own lines, not her groups')."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return set()
    found = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) == 4 and fields[0] == user and fields[1] == "veth" and fields[3].isdigit():
            found.add(fields[2])
    return found


def allow(user: str, path: Path = USERNET) -> None:
    """Her pool's lines added to lxc-usernet (the others kept)."""
    from vbox_cli.files import atomic_write

    have = allowed(user, path)
    text = path.read_text() if path.exists() else ""
    lines = [f"{user} veth {bridge} {VETHS}" for bridge in bridges(user) if bridge not in have]
    if lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text + ("" if not text or text.endswith("\n") else "\n") + "\n".join(lines) + "\n", 0o644)


def free_bridge(user: str, taken: set[str]) -> str:
    """A bridge of her pool that no network and no interface of this host has."""
    for bridge in bridges(user):
        if bridge in allowed(user) and bridge not in taken and not os.path.exists(f"/sys/class/net/{bridge}"):
            return bridge
    raise VboxError(f"every bridge /etc/lxc/lxc-usernet allows {user} is taken: {POOL} project networks with "
                    "LXC machines at most", hint="`env destroy` the machines of a project you no longer use")


# -- cgroups ---------------------------------------------------------------------------
def hierarchies(root: Path = CGROUPS) -> list[Path]:
    """The cgroup v1 hierarchies mounted under `root` (a controller's, or named)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and (p / "cgroup.procs").exists() and not (p / "cgroup.controllers").exists())


def delegated(user: str, root: Path = CGROUPS) -> list[Path]:
    return [hierarchy / f"vbox-{user}" for hierarchy in hierarchies(root)]


def undelegated(user: str, root: Path = CGROUPS) -> list[Path]:
    import pwd

    uid = pwd.getpwnam(user).pw_uid
    return [group for group in delegated(user, root)
            if not group.is_dir() or any(os.stat(p).st_uid != uid for p in (group, group / "cgroup.procs"))]


def delegate(user: str, root: Path = CGROUPS) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    for group in delegated(user, root):
        group.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):  # an empty cpuset takes no process
            if (group / name).exists() and not (group / name).read_text().strip():
                (group / name).write_text((group.parent / name).read_text())
        for path in (group, group / "cgroup.procs", group / "tasks"):
            if path.exists():
                os.chown(path, entry.pw_uid, entry.pw_gid)


def enter_cgroups(user: str) -> None:
    """This process moved into her delegated groups: lxc-start's children make theirs there."""
    for group in delegated(user):
        try:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError as exc:
            raise VboxError(f"cannot move into {group}: {exc.strerror}",
                            hint=f"as root: `env doctor --fix --user {user}`") from None


# -- what her machine needs ----------------------------------------------------------------
def unsupported(capability) -> str | None:
    """Why a user's LXC machine cannot do `capability` (providers.base.Capability); None
    for root's, and for what hers can do."""
    from providers.base import Capability

    if not is_user():
        return None
    return {
        Capability.PORTS: "forwarded ports are NAT rules of this host's kernel, which only root may set "
                          "(run as root)",
        Capability.NETWORKS: "a user's machine joins the project network only: lxc-user-nic puts veths only on "
                             "the bridges /etc/lxc/lxc-usernet lists (run as root)",
        Capability.SUSPEND: "CRIU checkpoints a container as root only (run as root)",
        Capability.MIGRATE: "its files belong to her subordinate ids, which another host does not map (run as "
                            "root)",
    }.get(capability)


def create(spec, folder: Path, lower: Path) -> None:
    """Her new machine's folder, but for its config (the provider writes that last): its
    layer written from her user namespace, its id map recorded (what makes it hers, for its
    whole life)."""
    from providers.guest import user_ids
    from providers.lxc_config import guest_files, masked_units
    from providers.lxc_layer import LAYER
    from providers.subids import user_map

    umap = user_map()
    check_spec(spec, umap)
    folder.mkdir(parents=True, mode=0o700)
    (folder / LAYER).mkdir()  # hers: she renames its layers (a snapshot's restore)
    (folder / USERMAP).write_text("\n".join(umap.lxc_lines()) + "\n")
    files = guest_files(spec)
    owners = {owner: user_ids(spec.box, owner) for _, _, owner in files.values()}
    write_layer(umap, folder, lower, files, owners, masks=("sys-kernel-debug.mount", *masked_units(spec)))

def preflight(machine_name: str) -> None:
    """What every machine of hers needs of this host."""
    from providers.host import which
    from providers.subids import required
    from providers.users import user_name

    user = user_name()
    try:
        required()
    except VboxError as exc:
        raise VboxError(f"{machine_name}: {exc.message}", hint=f"as root: `env doctor --fix --user {user}`") from None
    if which("lxc-usernsexec") is None or which("newuidmap") is None:
        raise VboxError(f"{machine_name}: an LXC machine of a normal user needs lxc-usernsexec (LXC) and newuidmap "
                        "(Debian's uidmap)", hint="as root: `env doctor --fix`")
    from providers.host import check_cgroup_view

    view = check_cgroup_view()
    if not view.ok:  # her cgroup would be named outside this system's namespace: lxc-start cannot open it
        raise VboxError(f"{machine_name}: {view.detail}", hint=view.hint)
    if missing := undelegated(user):
        raise VboxError(f"{machine_name}: no cgroup of yours for LXC machines ({missing[0]} is not yours)",
                        hint=f"as root: `env doctor --fix --user {user}` (again after a host restart)")


def check_spec(spec, umap) -> None:
    """What her machine cannot have, said before anything is made. `umap`: at its making,
    the box's tree is checked for her owners too."""
    from providers.lxc_config import devices
    from providers.users import user_name

    name, user = spec.machine.name, user_name()
    if umap is not None and not handed_over(spec.box.artefact("rootfs"), umap):
        raise VboxError(f"{name}: box {spec.box.name} {spec.box.version} cannot make an LXC machine of yours: its "
                        "root tree's owners are not those of your machines' id map (root's box, or one you "
                        "imported or built before vbox handed trees over)",
                        hint=f"`env box build {spec.box.name}` (--force if you have it) builds it into your own "
                             "store, without root")
    if spec.bridge not in allowed(user):
        old = not spec.bridge.startswith("vbu")
        raise VboxError(f"{name}: /etc/lxc/lxc-usernet does not let you put a machine on the project network's "
                        f"bridge {spec.bridge}",
                        hint="the project network was made before root allowed you bridges: `env destroy`, then "
                             "`env up`" if old else f"as root: `env doctor --fix --user {user}`")
    if spec.networks:
        raise VboxError(f"{name}: an LXC machine of a normal user joins the project network only: its veths go "
                        "through lxc-user-nic, which takes the bridges lxc-usernet lists", hint="run as root")
    if spec.machine.disk_set:
        raise VboxError(f"{name}: `disk` needs root for an LXC machine (its layer on a loop device)",
                        hint="remove `disk`, or run as root")
    if devices(spec):
        raise VboxError(f"{name}: box {spec.box.name} runs libvirt guests, which need /dev/net/tun opened by "
                        "the devices cgroup: only root can", hint="run as root")


# -- her machines' layer, from her user namespace -----------------------------------------
def inside(umap, argv: list[str], input: str | None = None, timeout: float = 300):
    """`argv` as the root of her machines' user namespace."""
    return proc.run(["lxc-usernsexec", *umap.usernsexec_args(), "--", *argv], input=input, timeout=timeout)


def handed_over(tree: Path, umap) -> bool:
    """Whether the box tree has her machines' owners (a build of hers made it)."""
    try:
        return os.lstat(tree).st_uid == umap.host_uid(0)
    except OSError:
        return False


def write_layer(umap, folder: Path, lower: Path, files: dict, owners: dict[str, tuple[int, int]],
                masks: tuple[str, ...] = (), clear: tuple[str, ...] = ()) -> None:
    """Files {relative path: (content, mode, owner)} written into the machine's upper layer
    (made, with its work folder's parent, if new), `clear` (globs) removed first, `masks`
    (systemd units) masked: from her user namespace, where the owners are the machine's."""
    from providers.lxc_config import UPPER

    payload = {"upper": str(folder / UPPER), "lower": str(lower), "files": files, "owners": owners,
               "masks": list(masks), "clear": list(clear)}
    inside(umap, [sys.executable, "-m", "providers.lxc_user"], input=json.dumps(payload))


def _write_inside(payload: dict) -> None:
    from providers import lxc_layer as layer

    upper, lower = Path(payload["upper"]), Path(payload["lower"])
    if not upper.is_dir():
        upper.parent.mkdir(mode=0o755, exist_ok=True)
        upper.mkdir(mode=0o755)
    for pattern in payload["clear"]:
        for old in upper.glob(pattern):
            old.unlink()
    owners = {name: tuple(ids) for name, ids in payload["owners"].items()}
    files = {path: tuple(entry) for path, entry in payload["files"].items()}
    layer.write_files(upper, lower, files, None, lambda owner: owners[owner], durable=False)
    for unit in payload["masks"]:
        layer.mask_unit(upper, lower, unit)


def drop_nic(pid: int) -> None:
    """The running machine's eth0 deleted from inside (her user namespace's root owns its
    network namespace), and with it the veth lxc-user-nic put on the bridge: a network
    namespace can outlive its container's processes, and its veth with it, which she could
    not delete from this side (root's machines' veths go the same way: lxc_host.remove_veths)."""
    proc.run(["nsenter", "--target", str(pid), "--user", "--net", "--", "ip", "link", "delete", "eth0"],
             check=False, timeout=30)


def remove(umap, folder: Path) -> None:
    """A machine's folder gone: its layer's files are her subordinate ids'."""
    if folder.exists():
        inside(umap, ["rm", "-rf", "--one-file-system", "--", str(folder)], timeout=600)


if __name__ == "__main__":  # write_layer's other half, in her user namespace
    _write_inside(json.load(sys.stdin))
