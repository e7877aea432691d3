"""Entry points of the `env` and `vbox` commands.

`env` is also coreutils' env, which every shell script uses. So `env_main` decides,
before anything heavy is imported, whether the arguments are for vbox; if not, it
replaces itself with the system's env, same arguments, same exit code, no output of
its own. Only `os` and `sys` may be imported at module level here.
"""

import os
import sys

# The verbs vbox owns as `env VERB`. The CLI registers exactly these (a test checks).
VERBS = frozenset({
    "init", "validate", "schema", "up", "lock", "diff", "status", "stats", "ssh", "ssh-config", "inventory", "console", "port",
    "provision", "restore", "halt", "suspend", "resume", "migrate", "reload", "destroy", "snapshot", "box", "doctor",
})
# Options that mean vbox too: `env --help`, `env --version`, shell completion.
OWN_OPTIONS = frozenset({"--help", "--version", "--install-completion", "--show-completion"})
# Set by the shell when it asks `env` for completions (with no arguments of vbox's).
COMPLETION_VARIABLE = "_ENV_COMPLETE"
# Verbs that are also common shell idioms (`env ssh host`): vbox's only inside a project.
PROJECT_ONLY_VERBS = frozenset({"ssh", "restore", "migrate"})  # restore(8) of dump; migrate: golang-migrate

FALLBACK_ENV = "/usr/bin/env"


def _in_project() -> bool:
    from vbox_cli.projectid import project_folder  # os and hashlib only

    return project_folder() is not None


def is_ours(args: list[str]) -> bool:
    if not args:
        return False
    first = args[0]
    if first in PROJECT_ONLY_VERBS:
        return first in VERBS and _in_project()
    return first in VERBS or first in OWN_OPTIONS


def _is_vbox_script(path: str) -> bool:
    # Another installation of this very entry point (a venv's env script, a symlink to
    # one): exec'ing it would loop. coreutils' env is a binary, not a script.
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return True
    return head.startswith(b"#!") and b"vbox_cli" in head


def system_env(self_path: str) -> str:
    """The next `env` on PATH that is not this program, else /usr/bin/env."""
    me = os.path.realpath(self_path) if self_path else ""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(folder or ".", "env")
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            continue
        if os.path.realpath(candidate) == me or _is_vbox_script(candidate):
            continue
        return candidate
    return FALLBACK_ENV


def original_environ():
    """The environment this process was started with.

    Python may change its own environment at start-up (PEP 538 sets LC_CTYPE=C.UTF-8
    under the C locale); the system env must get what our caller gave us.
    /proc/self/environ keeps the block the kernel handed over at exec.
    """
    try:
        with open("/proc/self/environ", "rb") as f:
            block = f.read()
    except OSError:
        return os.environ
    environ = {}
    for entry in block.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep and key:
            environ.setdefault(key, value)
    return environ


def passthrough(args: list[str]) -> "NoReturn":  # noqa: F821 - typing not imported on purpose
    target = system_env(sys.argv[0])
    try:
        os.execve(target, ["env", *args], original_environ())
    except OSError as exc:
        sys.stderr.write(f"env: cannot run the system env ({target}): {exc.strerror}\n")
        sys.exit(126)


def env_main() -> int:
    args = sys.argv[1:]
    if not (is_ours(args) or COMPLETION_VARIABLE in os.environ):
        passthrough(args)
    _fast_ssh(args)
    from vbox_cli.app import run

    _exit(run(args, prog_name="env"))


def _fast_ssh(args: list[str]) -> None:
    """`env ssh NAME` to a machine whose shared connection runs: ssh at once, without
    loading the rest of vbox (vbox_cli.sshmux). Returns when it cannot."""
    if "ssh" in args[:3]:
        from vbox_cli.sshmux import fast_exec

        fast_exec(args)


def vbox_main() -> int:
    _fast_ssh(sys.argv[1:])
    from vbox_cli.app import run

    _exit(run(sys.argv[1:], prog_name="vbox"))


def _exit(code: int) -> "NoReturn":  # noqa: F821
    """End the command once its work is done: other threads joined, atexit handlers run
    (libvirt connections closed), output flushed; then exit without the interpreter's
    teardown of every module and object, which took 0.2 to 1 s after an `up` here (in
    C, after the last line of Python)."""
    import atexit
    import threading

    if sys.getprofile() is not None or sys.gettrace() is not None:  # a profiler or debugger: it writes at exit
        sys.exit(code)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`env status | head`): nothing more to say
            pass
    os._exit(code)
