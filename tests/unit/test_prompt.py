"""`env destroy` asks on a terminal, and only there: "n" is a normal answer (exit 0,
nothing done); without a terminal and without -f it refuses (exit 2)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

VBOX = Path(sys.executable).parent / "vbox"


def _in_a_terminal(folder: Path, answer: bytes, env: dict) -> tuple[int, str]:
    main, child = os.openpty()
    process = subprocess.Popen([str(VBOX), "destroy"], cwd=folder, env=env, stdin=child, stdout=child, stderr=child,
                               close_fds=True)
    os.close(child)
    seen, deadline, answered = b"", time.monotonic() + 60, False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                seen += os.read(main, 4096)
            except OSError:
                break
        if not answered and b"[y/N]" in seen:
            os.write(main, answer + b"\n")
            answered = True
        if process.poll() is not None and not ready:
            break
    os.close(main)
    return process.wait(timeout=30), seen.decode(errors="replace")


def test_destroy_asks_only_on_a_terminal(tmp_path):
    (tmp_path / "Envfile").write_text("[machines.web]\n")
    (tmp_path / ".vbox").mkdir()
    env = {**os.environ, "VBOX_HOME": str(tmp_path / "home"), "VBOX_CACHE": str(tmp_path / "cache"),
           "TERM": "dumb", "COLUMNS": "80"}
    code, screen = _in_a_terminal(tmp_path, b"n", env)
    assert code == 0 and "Destroy every machine of this project? [y/N]" in screen and "nothing destroyed" in screen
    assert (tmp_path / ".vbox").is_dir()
    refused = subprocess.run([str(VBOX), "--plain", "destroy"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "no terminal to ask on" in refused.stderr and "-f" in refused.stderr
    assert (tmp_path / ".vbox").is_dir()
    code, screen = _in_a_terminal(tmp_path, b"y", env)
    assert code == 0, screen
    assert not (tmp_path / ".vbox").exists()
