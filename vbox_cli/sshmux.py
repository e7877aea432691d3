"""One OpenSSH connection per machine, shared by every `env ssh` (a ControlMaster), and
the fast path that reuses it without loading vbox.

The first `env ssh web` in a project goes the whole way (the Envfile, the machine's state,
its host key) and starts a master connection for web in the background, its socket in
this user's runtime folder. It also writes there the ssh command line it checked. While
that master runs, `env ssh web` only finds the project folder, reads that command line
and runs ssh: no Envfile, no libvirt, no LXC, no new SSH handshake.

The fast path trusts only what vbox wrote into the runtime folder: a folder of this
user's, mode 0700, made by vbox (never one a project folder can reach). A record names
the project folder and the machine exactly. It stands only while the project's state
file and Envfile are unchanged since it was written (any `env up`, `halt` or edit sends
the next `env ssh` the whole way again). vbox closes a machine's master when the machine
halts, is destroyed, suspended, migrated or restored.

Only os, stat, hashlib and json are imported at module level: `entry` imports this module
before anything else of vbox.
"""

import hashlib
import json
import os
import stat

from vbox_cli.projectid import project_folder, project_id

PERSIST = 600  # seconds a master stays with no session
RECORD_FORMAT = 1
ENVFILE = "Envfile"
STATE = os.path.join(".vbox", "state.json")
def runtime_dir() -> str:
    """This user's runtime folder for vbox: /run/vbox for root, else
    $XDG_RUNTIME_DIR/vbox, else /tmp/vbox-UID."""
    if os.geteuid() == 0:
        return "/run/vbox"
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isabs(base):
        return os.path.join(base, "vbox")
    return f"/tmp/vbox-{os.geteuid()}"


def _own_dir(path: str) -> bool:
    """A real folder of this user's that nobody else can write."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022


def ssh_dir(make: bool = False) -> str | None:
    """The folder of the masters' sockets and records, None when it is not ours (a
    folder another user made at that path, a symlink): then vbox shares no connection."""
    top = runtime_dir()
    path = os.path.join(top, "ssh")
    if make:
        for folder in (top, path):
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                pass
            except OSError:
                return None
    return path if _own_dir(top) and _own_dir(path) else None


def _key(project: str, machine: str) -> str:
    # the machine's name may be long: a socket's path has room for 107 bytes
    return f"{project}-{hashlib.sha256(machine.encode()).hexdigest()[:10]}"


def control_path(project: str, machine: str, make: bool = False) -> str | None:
    folder = ssh_dir(make)
    return None if folder is None else os.path.join(folder, _key(project, machine) + ".sock")


def _stamp(path: str) -> list | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns]


def alive(socket: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(socket).st_mode)
    except OSError:
        return False


def save(folder: str, machine: str, options: list[str], destination: str) -> None:
    """Record the checked ssh options of a machine whose master now runs."""
    folder = os.path.realpath(folder)
    where = ssh_dir()
    if where is None:
        return
    record = {"format": RECORD_FORMAT, "folder": folder, "machine": machine, "options": options,
              "destination": destination, "state": _stamp(os.path.join(folder, STATE)),
              "envfile": _stamp(os.path.join(folder, ENVFILE))}
    path = os.path.join(where, _key(project_id(folder), machine) + ".json")
    tmp = f"{path}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def _record(folder: str, machine: str) -> dict | None:
    where = ssh_dir()
    if where is None:
        return None
    path = os.path.join(where, _key(project_id(folder), machine) + ".json")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            return None
        try:
            record = json.loads(f.read(1 << 20))
        except ValueError:
            return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None
    if record.get("folder") != folder or record.get("machine") != machine:
        return None  # another folder whose id is the same: names are matched exactly
    if record.get("state") != _stamp(os.path.join(folder, STATE)) or \
            record.get("envfile") != _stamp(os.path.join(folder, ENVFILE)):
        return None
    options, destination = record.get("options"), record.get("destination")
    if not (isinstance(options, list) and all(isinstance(o, str) for o in options) and isinstance(destination, str)):
        return None
    return record


# `env ssh` options that change nothing for ssh itself
_NEUTRAL = frozenset({"--plain", "--verbose", "-v"})


def fast_argv(args: list[str]) -> list[str] | None:
    """The ssh command line for `env [--plain] ssh NAME [-- COMMAND...]` when a master of
    NAME runs and its record still stands; None sends the command the whole way."""
    while args and args[0] in _NEUTRAL:
        args = args[1:]
    if len(args) < 2 or args[0] != "ssh" or args[1].startswith("-"):
        return None
    machine, rest = args[1], args[2:]
    if rest and rest[0] != "--":
        return None
    command = rest[1:]
    folder = project_folder()
    if folder is None:
        return None
    record = _record(folder, machine)
    socket = control_path(project_id(folder), machine)
    if record is None or socket is None or not alive(socket):
        return None
    return client_argv(record["options"], record["destination"], socket, command,
                       tty=not command and os.isatty(0))


def client_argv(options: list[str], destination: str, socket: str | None, command: list[str] | None,
                tty: bool) -> list[str]:
    """The ssh command line: options, `--`, then the address and the command; through the
    machine's master when a socket is given and a master answers there (ControlMaster=no:
    else on its own)."""
    argv = ["ssh", *options]
    if socket:
        argv += ["-o", "ControlMaster=no", "-o", f"ControlPath={_escaped(socket)}"]
    if tty:
        argv.append("-t")
    argv += ["--", destination]
    if command:
        # One argument is a shell command line (`-- 'ls | wc -l'`); several are argv,
        # quoted so that each reaches the machine as it was given.
        if len(command) == 1:
            argv.append(command[0])
        else:
            import shlex

            argv.append(shlex.join(command))
    return argv


def _escaped(path: str) -> str:
    return path.replace("%", "%%")


def start_master(options: list[str], destination: str, socket: str, timeout: float = 15) -> bool:
    """A master connection for the machine, in the background: its own session, its
    standard streams /dev/null (a caller reading `env ssh`'s output is not kept waiting
    by it), gone after PERSIST seconds with no session or 15 s without an answer."""
    import subprocess

    argv = ["ssh", *options, "-o", "ControlMaster=yes", "-o", f"ControlPath={_escaped(socket)}",
            "-o", f"ControlPersist={PERSIST}", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
            "-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "-f", "-N", "--", destination]
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return False
    try:
        return process.wait(timeout) == 0 and alive(socket)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False


def close(project: str, machine: str) -> None:
    """End the machine's master, if one runs, and drop its record."""
    folder = ssh_dir()
    if folder is None:
        return
    base = os.path.join(folder, _key(project, machine))
    socket = base + ".sock"
    try:
        os.unlink(base + ".json")
    except FileNotFoundError:
        pass
    if alive(socket):
        import subprocess

        try:  # a master answers at once; one that does not is not waited for
            subprocess.run(["ssh", "-o", f"ControlPath={_escaped(socket)}", "-O", "exit", "--", "vbox-master"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            os.unlink(socket)  # a master that no longer answered
        except FileNotFoundError:
            pass


class Closer:
    """An event sink: ends a machine's master as the machine stops being what it reached
    (halted, destroyed, suspended, moved, or its disk put back)."""

    PHASES = frozenset({"halting", "destroying", "suspending", "migrating", "restoring"})

    def __init__(self, project: str):
        self.project = project

    def handle(self, event) -> None:
        if event.kind == "phase" and event.subject and event.phase in self.PHASES:
            close(self.project, event.subject)


def leaks(project: str | None = None) -> list[str]:
    """Masters and records of a project (of every project without one) left behind."""
    folder = ssh_dir()
    if folder is None:
        return []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    prefix = f"{project}-" if project else ""
    return [f"ssh master or record {os.path.join(folder, n)}" for n in names
            if n.startswith(prefix) and (not project or len(n.split(".")[0]) == len(prefix) + 10)]


def fast_exec(args: list[str]) -> None:
    """Run `env ssh` the fast way when it can; return when it cannot."""
    try:
        argv = fast_argv(args)
    except Exception:  # anything odd: the whole way, which says what is wrong
        return
    if argv is None:
        return
    try:
        os.execvp("ssh", argv)
    except OSError:  # no ssh on PATH: the whole way says so
        return
