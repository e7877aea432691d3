"""Bytecode for vbox's packages before a benchmark times the CLI, as an installed vbox has
it: under PYTHONDONTWRITEBYTECODE=1 (some shells, CI images) every module changed since
its last .pyc would be compiled again at every command (about 30 ms of `env status` and
more of `env up`), and the figures would be of that."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("vbox_cli", "providers", "provisioners", "boxes")


def ensure() -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(REPO / p) for p in PACKAGES)],
                   stdout=subprocess.DEVNULL, check=False)
