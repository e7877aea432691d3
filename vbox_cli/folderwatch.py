"""inotify in a KVM machine for changes made on the host to its synced folders.

virtiofs has no way to tell the guest's kernel that a file changed on the host: a tool
in the machine that watches files (a rebuild on save) sees nothing. So while such a
machine runs, a small process of vbox watches its folders here and, for each file
written, made, moved or removed here, has the machine's root give that file (or, for a
removal, its folder) its own modification time again (`touch -c -m -r F F`). That
changes nothing, but the machine's kernel reports it to its watchers as a modification
(IN_MODIFY: node's fs.watch, chokidar, watchdog, inotifywait -e modify and systemd's
path units take it as a change).

It watches with fanotify, not inotify, because fanotify says which process made each
change: changes made by the machine itself reach this host through its own virtiofsd,
and are not sent back to it (the machine's watchers saw them already; a build writing
thousands of files would otherwise be echoed file by file). The touch comes back here
as a modification by virtiofsd too: no loop. One batch of paths is in the machine at a
time; what changes meanwhile makes the next one, and more than MAX_BATCH paths (a
checkout) are touched as their folders.

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
# each path on a line; an empty line ends a batch, and the machine answers it with one
GUEST_COMMAND = ("sudo -n sh -c 'while IFS= read -r p; do if [ -z \"$p\" ]; then echo; "
                 "else touch -c -m -r \"$p\" -- \"$p\" 2>/dev/null; fi; done'")
MAX_BATCH = 100  # paths changed at once (a checkout, a build): beyond that, their folders
MODULE = "vbox_cli.folderwatch"

# fanotify (linux/fanotify.h): like inotify, but each event says which process caused it
FAN_CLOEXEC, FAN_UNLIMITED_QUEUE, FAN_UNLIMITED_MARKS = 0x1, 0x10, 0x20
FAN_REPORT_DFID_NAME = 0x400 | 0x800  # the folder's file handle and the entry's name
FAN_CLOSE_WRITE, FAN_MOVED_FROM, FAN_MOVED_TO, FAN_CREATE, FAN_DELETE = 0x8, 0x40, 0x80, 0x100, 0x200
FAN_Q_OVERFLOW, FAN_EVENT_ON_CHILD, FAN_ONDIR = 0x4000, 0x08000000, 0x40000000
FAN_MARK_ADD = 0x1
MASK = FAN_CLOSE_WRITE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_CREATE | FAN_DELETE | FAN_EVENT_ON_CHILD | FAN_ONDIR
INFO_DFID_NAME = 2
_META = struct.Struct("IBBHQii")  # fanotify_event_metadata
_INFO = struct.Struct("BBH")  # fanotify_event_info_header
_HANDLE = struct.Struct("Ii")  # file_handle: handle_bytes, handle_type


class _FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]


class Watcher:
    """Folders watched with fanotify, each mapped to the path the machine sees. Events
    caused by a process for which `ignore(pid)` is true (the machine's own virtiofsd:
    the machine saw those changes itself) are dropped: no echo back into it."""

    def __init__(self, ignore=lambda pid: False):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                            ctypes.c_char_p]
        self.fd = self.libc.fanotify_init(FAN_CLOEXEC | FAN_REPORT_DFID_NAME | FAN_UNLIMITED_QUEUE
                                          | FAN_UNLIMITED_MARKS, os.O_RDONLY)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "fanotify_init")
        self.folders: dict[bytes, tuple[Path, str]] = {}  # a folder's handle -> (host folder, guest folder)
        self.ignore = ignore
        self._ignored: dict[int, bool] = {}

    def add_tree(self, host: Path, guest: str) -> None:
        for root, dirs, _ in os.walk(host):
            dirs[:] = [d for d in dirs if d not in SKIP and not os.path.islink(os.path.join(root, d))]
            relative = os.path.relpath(root, host)
            self._add(Path(root), guest if relative == "." else f"{guest.rstrip('/')}/{relative}")

    def _add(self, host: Path, guest: str) -> None:
        handle = _FileHandle(128)
        mount_id = ctypes.c_int()
        if self.libc.name_to_handle_at(-100, os.fsencode(host), ctypes.byref(handle), ctypes.byref(mount_id), 0):
            return  # gone already
        if self.libc.fanotify_mark(self.fd, FAN_MARK_ADD, MASK, -100, os.fsencode(host)):
            print(f"folderwatch: cannot watch {host}: {os.strerror(ctypes.get_errno())}", flush=True)
            return
        key = struct.pack("i", handle.handle_type) + bytes(handle.f_handle[:handle.handle_bytes])
        self.folders[key] = (host, guest)

    def _is_ignored(self, pid: int) -> bool:
        if pid not in self._ignored:
            self._ignored[pid] = self.ignore(pid)
        return self._ignored[pid]

    def read(self) -> list[str]:
        """Block for events; the machine's paths to touch, in order, without repeats."""
        data = os.read(self.fd, 65536)
        found: list[str] = []
        offset = 0
        while offset + _META.size <= len(data):
            length, _, _, header, mask, fd, pid = _META.unpack_from(data, offset)
            event = data[offset + header: offset + length]
            offset += length
            if fd >= 0:
                os.close(fd)
            if mask & FAN_Q_OVERFLOW or self._is_ignored(pid):
                continue
            info_type, _, info_length = _INFO.unpack_from(event, 0)
            if info_type != INFO_DFID_NAME:
                continue
            body = event[_INFO.size + 8: info_length]  # after the file system id
            size, kind = _HANDLE.unpack_from(body, 0)
            key = struct.pack("i", kind) + body[_HANDLE.size: _HANDLE.size + size]
            name = body[_HANDLE.size + size:].split(b"\0", 1)[0].decode(errors="surrogateescape")
            if key not in self.folders or not name or name in SKIP or name == ".":
                continue
            host, guest = self.folders[key]
            path = f"{guest.rstrip('/')}/{name}"
            if mask & FAN_ONDIR and mask & (FAN_CREATE | FAN_MOVED_TO):
                self.add_tree(host / name, path)
            target = guest if mask & (FAN_DELETE | FAN_MOVED_FROM) else path
            if "\n" not in target and target not in found:
                found.append(target)
        return found


def served_by(marker: str):
    """A predicate: is this process a virtiofsd serving a folder under `marker` (the
    machine's own, whose changes the machine has seen already)?"""
    def check(pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(argv) and argv[0].endswith(b"virtiofsd") and any(marker.encode() in arg for arg in argv)

    return check


def batch(paths: list[str]) -> list[str]:
    """What to touch for these changed paths: themselves, or their folders when there are
    more than MAX_BATCH (a checkout, a build's output)."""
    if len(paths) > MAX_BATCH:
        return list(dict.fromkeys(p.rsplit("/", 1)[0] or "/" for p in paths))
    return paths


def run(config_path: Path) -> int:
    """The watcher's loop: connect, forward, reconnect; end when the config is gone. One
    batch at a time: the machine answers each with a line once it has touched them all,
    and what changes meanwhile makes the next batch (so a burst of changes becomes a few
    batches of folders, not a queue of thousands of touches)."""
    import select

    from provisioners.ssh import Target, connect

    config = json.loads(config_path.read_text())
    owner = config_path.stat().st_ino  # a new config (a new watcher) replaces this one
    target = Target(name=config["machine"], host=config["host"], port=config["port"], user=config["user"],
                    client_key=Path(config["client_key"]), host_key=config["host_key"])
    watcher = Watcher(served_by(config["served_from"]) if config.get("served_from") else lambda pid: False)
    for host, guest in config["folders"]:
        watcher.add_tree(Path(host), guest)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    channel = client = None
    queued: list[str] = []
    in_flight = False
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
            in_flight = False
            try:
                client = connect(target, timeout=5)
                channel = client.get_transport().open_session()
                channel.exec_command(GUEST_COMMAND)
            except Exception as exc:  # the machine rebooting or halted: try again
                print(f"folderwatch: {config['machine']}: not connected ({exc}); trying again", flush=True)
                time.sleep(2)
                continue
        ready, _, _ = select.select([watcher.fd, channel], [], [], 2.0)
        if channel in ready:
            answer = channel.recv(4096) if channel.recv_ready() else b""
            if b"\n" in answer:
                in_flight = False
        if watcher.fd in ready:
            queued += [p for p in watcher.read() if p not in queued]
            time.sleep(0.01)  # an editor's save is several events: take them in one go
            if select.select([watcher.fd], [], [], 0)[0]:
                queued += [p for p in watcher.read() if p not in queued]
        if queued and not in_flight:
            try:
                channel.sendall(("\n".join(batch(queued)) + "\n\n").encode(errors="surrogateescape"))
            except Exception:
                channel = None
                continue
            queued, in_flight = [], True


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


def ensure(project, machine: str, target, folders: list[tuple[str, str]], served_from: str = "") -> bool:
    """A watcher for the machine's folders (`folders`: host path, path in the machine)
    running with these settings; True if one was started. `served_from`: what the command
    line of the machine's own virtiofsd has (their changes are not sent back)."""
    from vbox_cli import proc
    from vbox_cli.files import atomic_write

    config, pid_file = _files(project, machine)
    wanted = {"machine": machine, "host": target.host, "port": target.port, "user": target.user,
              "client_key": str(target.client_key), "host_key": target.host_key,
              "folders": [list(pair) for pair in folders], "served_from": served_from}  # as JSON reads it back
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
