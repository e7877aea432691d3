"""Integration tests: root, the real libvirtd, LXC, real boxes from the Debian mirror.

They fail (not skip) when the host is not set up: `bash scripts/test.sh` sets it up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VBOX = Path(sys.executable).parent / "vbox"


def vbox(*args, env=None, timeout=900, check_rc=None):
    environ = {**os.environ, **(env or {})}
    result = subprocess.run([str(VBOX), "--plain", *args], env=environ, capture_output=True, text=True,
                            timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    if check_rc is not None:
        assert result.returncode == check_rc, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def host():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root: run `bash scripts/test.sh`")
    report = json.loads(vbox("doctor", "--json").stdout)
    missing = [c for c in report["checks"] if c["status"] == "missing"]
    if missing:
        pytest.fail(f"host not set up ({missing}): run `bash scripts/test.sh`")
    return report


@pytest.fixture(scope="session")
def debian12(host):
    """The debian-12 box in the real store, built once (and cached across runs)."""
    from boxes.store import BoxStore

    vbox("box", "build", "debian-12", timeout=1800, check_rc=0)
    return BoxStore().get("debian-12")
