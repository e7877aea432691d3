"""inotify in a KVM machine for changes made on the host to its synced folders.

virtiofs has no way to tell the guest's kernel that a file changed on the host: a tool
in the machine that watches files (a rebuild on save) sees nothing. So while such a
machine runs, a small process of vbox watches its folders here (inotify) and, for each
file written, made, moved or removed here, has the machine's root give that file (or,
for a removal, its folder) its own modification time again (`touch -c -m -r F F`).
That changes nothing, but the machine's kernel reports it to its watchers as a
modification (IN_MODIFY: node's fs.watch, chokidar, watchdog, inotifywait -e modify and
systemd's path units take it as a change). Here it comes back as a modification too,
which this watcher does not listen for (it takes IN_CLOSE_WRITE and the folder's
entries): no loop. Changes the machine makes itself come back once (this host cannot
tell them apart) and are touched in it once more; more than MAX_BATCH paths at once (a
checkout, a build's output) are touched as their folders instead.

One process per machine, in a session of its own: `python -m vbox_cli.folderwatch
CONFIG`, where CONFIG (0600, in the project's .vbox/watch/) says how to reach the
machine (its address, the project's key, the host key vbox made) and which folders.
It follows the machine across reboots (reconnects), and ends when its config file is
removed (`halt`, `destroy`) or replaced by another process's. Folders named `.git`
and `.vbox` are not watched.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import struct
import sys
import time
from pathlib import Path

SKIP = {".git", ".vbox"}
GUEST_COMMAND = "sudo -n sh -c 'while IFS= read -r p; do touch -c -m -r \"$p\" -- \"$p\" 2>/dev/null; done'"
MAX_BATCH = 100  # paths changed at once (a checkout, a build): beyond that, their folders
MODULE = "vbox_cli.folderwatch"

# inotify (linux/inotify.h)
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR = 0x400, 0x800, 0x4000, 0x8000, 0x40000000
IN_ONLYDIR, IN_NONBLOCK, IN_CLOEXEC = 0x01000000, 0x800, 0x80000
MASK = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ONLYDIR
_EVENT = struct.Struct("iIII")


class Inotify:
    """Recursive inotify watches on folders, each mapped to the path the machine sees."""

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.watches: dict[int, tuple[Path, str]] = {}  # watch descriptor -> (host folder, guest folder)
        self.full = False

    def add_tree(self, host: Path, guest: str) -> None:
        for root, dirs, _ in os.walk(host):
            dirs[:] = [d for d in dirs if d not in SKIP and not os.path.islink(os.path.join(root, d))]
            relative = os.path.relpath(root, host)
            self._add(Path(root), guest if relative == "." else f"{guest.rstrip('/')}/{relative}")

    def _add(self, host: Path, guest: str) -> None:
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(host), MASK)
        if wd < 0:
            if ctypes.get_errno() == 28 and not self.full:  # ENOSPC: fs.inotify.max_user_watches
                self.full = True
                print(f"folderwatch: out of inotify watches at {host} (sysctl fs.inotify.max_user_watches)",
                      flush=True)
            return
        self.watches[wd] = (host, guest)

    def read(self) -> list[str]:
        """Block for events; the machine's paths to touch, in order, without repeats."""
        data = os.read(self.fd, 65536)
        found: list[str] = []
        offset = 0
        while offset < len(data):
            wd, mask, _, size = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size: offset + _EVENT.size + size].rstrip(b"\0").decode(errors="surrogateescape")
            offset += _EVENT.size + size
            if mask & IN_IGNORED:
                self.watches.pop(wd, None)
                continue
            if wd not in self.watches or not name or name in SKIP:
                continue
            host, guest = self.watches[wd]
            path = f"{guest.rstrip('/')}/{name}"
            if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                self.add_tree(host / name, path)
            target = guest if mask & (IN_DELETE | IN_MOVED_FROM) else path
            if "\n" not in target and target not in found:
                found.append(target)
        return found


def run(config_path: Path) -> int:
    """The watcher's loop: connect, forward, reconnect; end when the config is gone."""
    import select

    from provisioners.ssh import Target, connect

    config = json.loads(config_path.read_text())
    owner = config_path.stat().st_ino  # a new config (a new watcher) replaces this one
    target = Target(name=config["machine"], host=config["host"], port=config["port"], user=config["user"],
                    client_key=Path(config["client_key"]), host_key=config["host_key"])
    watcher = Inotify()
    for host, guest in config["folders"]:
        watcher.add_tree(Path(host), guest)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    channel = client = None
    while True:
        try:
            if config_path.stat().st_ino != owner:
                return 0
        except FileNotFoundError:
            return 0
        if channel is None or channel.closed or channel.exit_status_ready():
            if client is not None:
                client.close()
            channel = client = None
            try:
                client = connect(target, timeout=5)
                channel = client.get_transport().open_session()
                channel.exec_command(GUEST_COMMAND)
            except Exception as exc:  # the machine rebooting or halted: try again
                print(f"folderwatch: {config['machine']}: not connected ({exc}); trying again", flush=True)
                time.sleep(2)
                continue
        ready, _, _ = select.select([watcher.fd], [], [], 2.0)
        if not ready:
            continue
        paths = watcher.read()
        time.sleep(0.01)  # an editor's save is several events: take them in one go
        ready, _, _ = select.select([watcher.fd], [], [], 0)
        if ready:
            paths += [p for p in watcher.read() if p not in paths]
        if len(paths) > MAX_BATCH:
            paths = list(dict.fromkeys(p.rsplit("/", 1)[0] or "/" for p in paths))
        if paths:
            try:
                channel.sendall(("\n".join(paths) + "\n").encode(errors="surrogateescape"))
            except Exception:
                channel = None


# -- managed from the verbs ----------------------------------------------------------
def _files(project, machine: str, make: bool = False) -> tuple[Path, Path]:
    folder = project.ensure_dir("watch") if make else project.state_dir / "watch"
    return folder / f"{machine}.json", folder / f"{machine}.pid"


def _running(pid_file: Path, config: Path) -> int | None:
    """The PID of the watcher of `config`, if that process is alive and is it."""
    try:
        pid = int(pid_file.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if MODULE.encode() in argv and os.fsencode(config) in argv else None


def ensure(project, machine: str, target, folders: list[tuple[str, str]]) -> bool:
    """A watcher for the machine's folders (`folders`: host path, path in the machine)
    running with these settings; True if one was started."""
    from vbox_cli import proc
    from vbox_cli.files import atomic_write

    config, pid_file = _files(project, machine)
    wanted = {"machine": machine, "host": target.host, "port": target.port, "user": target.user,
              "client_key": str(target.client_key), "host_key": target.host_key,
              "folders": [list(pair) for pair in folders]}  # as JSON reads it back
    if _running(pid_file, config) and config.exists() and json.loads(config.read_text()) == wanted:
        return False
    stop(project, machine)
    config, pid_file = _files(project, machine, make=True)
    atomic_write(config, json.dumps(wanted, indent=1), 0o600)
    pid = proc.spawn_daemon([sys.executable, "-m", MODULE, "--project", project.id, str(config)],
                            config.with_suffix(".log"))
    atomic_write(pid_file, f"{pid}\n", 0o600)
    return True


def stop(project, machine: str) -> None:
    config, pid_file = _files(project, machine)
    pid = _running(pid_file, config)
    config.unlink(missing_ok=True)  # the watcher ends by itself within 2 s without it
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    pid_file.unlink(missing_ok=True)
    config.with_suffix(".log").unlink(missing_ok=True)


def leaks(project_id: str | None = None) -> list[str]:
    """Watcher processes left running (of one project, or of any)."""
    from vbox_cli.proc import processes

    return [f"folder watcher process {pid} ({argv[-2].decode(errors='replace')})" for pid, argv in processes()
            if MODULE.encode() in argv and (project_id is None or project_id.encode() in argv)]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "--project":
        print("usage: python -m vbox_cli.folderwatch --project ID CONFIG", file=sys.stderr)
        return 2
    return run(Path(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
