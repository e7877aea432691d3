"""What a person sees: `env up` (one machine whose step fails), `env status` and `env
destroy` run in a pseudo-terminal of 80 columns, the screen rendered by a terminal
emulator (pyte) and compared with golden captures in screens/ (addresses, times and the
project's id replaced; VBOX_REGENERATE_GOLDEN=1 rewrites them). Also checked outright:
nothing wider than the terminal, a table row per machine, the failure named once in the
table and once as the error."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import termios
from pathlib import Path

import pyte

from providers.leaks import find as find_leaks
from tests.integration.conftest import VBOX
from tests.integration.test_lxc import Project

SCREENS = Path(__file__).parent / "screens"
COLUMNS, ROWS = 80, 60


def screen_of(args: list[str], cwd: Path) -> tuple[int, list[str]]:
    """Run vbox in a pseudo-terminal of COLUMNS x ROWS; its exit code and the screen's lines."""
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(cwd)
        os.environ.update(TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(ROWS))
        os.environ.pop("NO_COLOR", None)
        os.execv(str(VBOX), [str(VBOX), *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    screen = pyte.Screen(COLUMNS, ROWS)
    stream = pyte.ByteStream(screen)
    while True:
        try:
            ready, _, _ = select.select([fd], [], [], 600)
            data = os.read(fd, 65536) if ready else b""
        except OSError:  # the other side closed
            data = b""
        if not data:
            break
        stream.feed(data)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), [line.rstrip() for line in screen.display if line.strip()]


def normalized(lines: list[str], project: str) -> str:
    """Lines with what changes from run to run replaced: the project's id, addresses,
    seconds; runs of blanks and rules squeezed (a longer address widens a column)."""
    text = []
    for line in lines:
        line = line.replace(project, "PROJECT")
        line = re.sub(r"\b10\.\d+\.\d+\.\d+\b", "ADDRESS", line)
        line = re.sub(r"\b\d+\.\d\b", "N.N", line)
        line = re.sub(r"sha256:[0-9a-f]{12}", "sha256:DIGEST", line)
        line = re.sub(r"([^│ ][^│]{19})[^│]*…", r"\1…", line)  # a cell cut to fit: where depends on widths
        line = re.sub(r" {2,}", " ", re.sub(r"([━─])\1+", r"\1", line))
        text.append(line)
    return "\n".join(text) + "\n"


def check_screen(name: str, lines: list[str], project: str) -> None:
    assert all(len(line) <= COLUMNS for line in lines)
    for line in lines:  # a table is whole: not cut at the terminal's edge
        if line[:1] in "┏┃┡│└":
            assert line[-1] in "┓┃┩│┘", f"a table cut at {COLUMNS} columns: {line!r}"
    path = SCREENS / name
    text = normalized(lines, project)
    if os.environ.get("VBOX_REGENERATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"the screen of {name} differs; VBOX_REGENERATE_GOLDEN=1 rewrites it:\n{text}"


def test_up_status_destroy_on_an_80_column_terminal(debian12, tmp_path):
    project = Project(tmp_path / "screen")
    project.folder.mkdir()
    project.write("""
[defaults]
folders = []
[machines.web]
provision = [{ shell = "echo building the site; exit 3" }]
[machines.db]
""")
    try:
        rc, lines = screen_of(["up"], project.folder)
        assert rc == 1
        rows = [line for line in lines if line.startswith("│")]
        assert len(rows) == 2 and "FAILED: provisioning step 1" in rows[0] and "created, started" in rows[1]
        assert sum("web: provisioning step 1" in line for line in lines) == 1  # the error, once
        check_screen("up-with-a-failure.txt", lines, project.id)
        rc, lines = screen_of(["status"], project.folder)
        assert rc == 0 and sum("running" in line for line in lines) == 2
        check_screen("status.txt", lines, project.id)
    finally:
        rc, lines = screen_of(["destroy", "-f"], project.folder)
    assert rc == 0
    check_screen("destroy.txt", lines, project.id)
    assert find_leaks(project.id) == []
