"""The installed `env` script: coreutils env for everything that is not a vbox verb."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vbox_cli import entry

BIN = Path(sys.executable).parent
ENV = BIN / "env"
COREUTILS_ENV = "/usr/bin/env"


@pytest.fixture(autouse=True)
def _installed():
    if not ENV.exists():
        pytest.fail(f"the env script is not installed at {ENV}: pip install -e . first")


def run(args, *, cwd=None, env=None, input=None, path_first=True):
    environ = dict(env if env is not None else os.environ)
    if path_first:
        environ["PATH"] = f"{BIN}{os.pathsep}{environ.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run([str(ENV), *args], cwd=cwd, env=environ, input=input, capture_output=True, timeout=60)


def coreutils(args, env=None):
    """coreutils env as a shell runs `env ARGS`: argv[0] is plain "env"."""
    return subprocess.run(["env", *args], executable=COREUTILS_ENV, env=env, capture_output=True)


def test_no_arguments_prints_the_environment_like_coreutils():
    # No LANG or LC_*: the C locale, under which Python would add LC_CTYPE to its environment.
    environ = {"PATH": f"{BIN}:/usr/bin:/bin", "VBOX_TEST_A": "1", "VBOX_TEST_B": "two words"}
    ours = run([], env=environ, path_first=False)
    theirs = coreutils([], env=environ)
    assert ours.returncode == 0
    assert ours.stdout == theirs.stdout
    assert ours.stderr == b""


def test_ignore_environment():
    result = run(["-i", "A=1", "sh", "-c", "echo $A; echo ${HOME:-unset}"])
    assert result.stdout == b"1\nunset\n"
    assert result.returncode == 0


def test_assignments_then_command():
    result = run(["A=1", "B=2", "printenv", "B"])
    assert (result.returncode, result.stdout) == (0, b"2\n")


def test_missing_program_exits_127_with_coreutils_message():
    ours = run(["vbox-no-such-program-xyz"])
    theirs = coreutils(["vbox-no-such-program-xyz"])
    assert ours.returncode == theirs.returncode == 127
    assert ours.stderr == theirs.stderr


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_status_passes_through(code):
    assert run(["sh", "-c", f"exit {code}"]).returncode == code


def test_stdin_and_stdout_pass_untouched():
    data = bytes(range(256)) * 1000
    result = run(["cat"], input=data)
    assert result.stdout == data
    assert result.stderr == b""


def test_unknown_option_is_coreutils_error():
    ours = run(["--no-such-option"])
    theirs = coreutils(["--no-such-option"])
    assert ours.returncode == theirs.returncode != 0
    assert ours.stderr == theirs.stderr


def test_our_verbs_are_ours(tmp_path):
    version = run(["--version"])
    assert version.returncode == 0 and version.stdout.startswith(b"vbox ")
    validate = run(["validate"], cwd=tmp_path)
    assert validate.returncode == 2
    assert b"no Envfile" in validate.stderr
    help_ = run(["--help"])
    assert help_.returncode == 0 and b"validate" in help_.stdout and b"box" in help_.stdout


def test_ssh_outside_a_project_is_the_shell_idiom(tmp_path):
    if not shutil.which("ssh"):
        pytest.skip("no ssh client")
    result = run(["ssh", "-V"], cwd=tmp_path)
    assert result.returncode == 0
    assert b"OpenSSH" in result.stderr


def test_another_vbox_env_on_path_does_not_loop(tmp_path):
    # Two installations of vbox's env ahead of coreutils' on PATH: a symlink and a copy.
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "env").symlink_to(ENV)
    shutil.copy2(ENV, second / "env")
    environ = {**os.environ, "PATH": f"{first}:{second}:/usr/bin:/bin"}
    result = subprocess.run([str(first / "env"), "A=1", "printenv", "A"], env=environ, capture_output=True,
                            timeout=30)
    assert (result.returncode, result.stdout) == (0, b"1\n")


def test_passthrough_imports_nothing_heavy():
    probe = (
        "import os, sys\n"
        "def fake_execve(path, argv, environ):\n"
        "    heavy = sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'rich', 'pydantic', 'libvirt',"
        " 'paramiko', 'jinja2', 'click', 'tomllib', 'pathlib'})\n"
        "    print(path, argv, heavy, flush=True)\n"
        "    os._exit(0)\n"
        "os.execve = fake_execve\n"
        "sys.argv = ['env', 'true']\n"
        "from vbox_cli.entry import env_main\n"
        "env_main()\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("['env', 'true'] []"), result.stdout


def test_verbs_are_exactly_the_registered_commands():
    import typer

    from vbox_cli.app import make_app

    command = typer.main.get_command(make_app())
    assert set(command.commands) == set(entry.VERBS)


@pytest.mark.parametrize("args,verb", [(["status"], "status"), (["--plain", "-f", "x/Envfile", "box", "list"], "box"),
                                       (["--file", "status", "up"], "up"), (["-v", "ssh-config", "web"], "ssh-config"),
                                       (["--help"], None), (["stauts"], None), ([], None), (["--", "up"], None)])
def test_a_command_line_registers_its_verb_alone(args, verb):
    """A verb's own command line builds a CLI of that verb only (and the same command as
    in the whole CLI); anything else, the whole CLI, which explains itself."""
    import typer

    from vbox_cli.app import make_app, verb_of

    assert verb_of(args) == verb
    if verb is not None:
        alone = typer.main.get_command(make_app(verb))
        whole = typer.main.get_command(make_app())
        assert list(alone.commands) == [verb]
        assert alone.commands[verb].params == whole.commands[verb].params or \
            [p.name for p in alone.commands[verb].params] == [p.name for p in whole.commands[verb].params]


def test_status_imports_no_other_verb(tmp_path):
    (tmp_path / "Envfile").write_text('[machines.web]\nprovider = "lxc"\n')
    probe = ("import sys\nfrom vbox_cli.app import run\nrun(['status', '--help'], prog_name='vbox')\n"
             "print(sorted(m for m in sys.modules if m.startswith('vbox_cli.commands.')))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Usage: vbox status" in result.stdout, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "['vbox_cli.commands.status']"
