"""scripts/ci-example.sh, the CI recipe of docs/ci.md, on a sample project of two LXC
machines: up --locked with events, the tests in a machine, destroy always (on success,
on a failing test, on a cancelled job), the box cache, and a lock that does not match."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from providers.leaks import find as find_leaks
from tests.integration.conftest import VBOX
from vbox_cli.project import project_id

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ci-example.sh"
ENVFILE = """\
[defaults]
box = "debian-12"
provider = "lxc"
folders = []

[machines.web]
provision = [{ script = "scripts/setup.sh", args = ["web"] }]

[machines.db]
provision = [{ shell = "echo db > /etc/role" }]
"""


def run(project: Path, command: str, cache: Path, **kwargs):
    return subprocess.Popen(["bash", str(SCRIPT), str(project), command], env={**os.environ, "VBOX_CI_CACHE":
                            str(cache)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_the_ci_recipe(debian12, tmp_path):
    project = tmp_path / "sample"
    (project / "scripts").mkdir(parents=True)
    (project / "scripts" / "setup.sh").write_text('#!/bin/sh\necho "$1" > /etc/role\n')
    (project / "Envfile").write_text(ENVFILE)
    subprocess.run([str(VBOX), "--plain", "lock"], cwd=project, check=True, capture_output=True)
    cache = tmp_path / "cache"
    try:
        # the tests pass: exit 0, the events end with a result, the box is cached, nothing left
        first = run(project, "test \"$(cat /etc/role)\" = web", cache)
        out, _ = first.communicate(timeout=600)
        assert first.returncode == 0, out
        last = json.loads((project / "vbox-events.ndjson").read_text().splitlines()[-1])
        assert last["event"] == "result" and last["ok"] and last["exit_code"] == 0
        assert len(list(cache.glob("*/debian-12-*.box"))) == 1
        assert find_leaks(project_id(project)) == []
        # a failing test: its status, the box restored from the cache, the machines destroyed
        second = run(project, "exit 3", cache)
        out, _ = second.communicate(timeout=600)
        assert second.returncode == 3 and "restoring debian-12-" in out, out
        assert find_leaks(project_id(project)) == []
        # the job cancelled while the tests run (SIGTERM to its processes): destroyed all the same
        third = run(project, "sleep 120", cache, start_new_session=True)
        events = project / "vbox-events.ndjson"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and third.poll() is None:
            if events.is_file() and '"event": "result"' in events.read_text():
                break  # up is done: the tests run
            time.sleep(0.5)
        time.sleep(2)
        os.killpg(third.pid, signal.SIGTERM)
        out, _ = third.communicate(timeout=300)
        assert third.returncode != 0 and "destroying the machines" in out, out
        assert find_leaks(project_id(project)) == []
        # a script changed after the lock: refused before anything is made
        (project / "scripts" / "setup.sh").write_text("#!/bin/sh\necho changed\n")
        fourth = run(project, "true", cache)
        out, _ = fourth.communicate(timeout=300)
        assert fourth.returncode == 1, out
        last = json.loads((project / "vbox-events.ndjson").read_text().splitlines()[-1])
        assert not last["ok"] and "does not match" in last["error"] and "web: step 1 (script) changed" in last["hint"]
        assert find_leaks(project_id(project)) == []
    finally:
        subprocess.run([str(VBOX), "--plain", "destroy", "-f"], cwd=project, capture_output=True)
