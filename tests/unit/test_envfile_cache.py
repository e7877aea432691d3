"""The validated-Envfile cache: faster reads, never a hidden problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vbox_cli.envfile.cache import summarize
from vbox_cli.errors import EnvfileError

ENVFILE = '[machines.web]\nprovision = [{ script = "setup.sh" }]\n[machines.db]\nmemory = "1G"\n'


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("VBOX_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "setup.sh").write_text("echo hi\n")
    (folder / "Envfile").write_text(ENVFILE)
    return folder


def summarize_in_subprocess(path: Path, cache: Path) -> dict:
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from vbox_cli.envfile.cache import read, summarize\n"
        f"p = Path({str(path)!r})\n"
        "s = summarize(p, read(p))\n"
        "print(json.dumps({'summary': s, 'pydantic': 'pydantic' in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "VBOX_CACHE": str(cache)})
    return json.loads(result.stdout)


def test_second_read_skips_validation(project, tmp_path):
    first = summarize_in_subprocess(project / "Envfile", tmp_path / "cache")
    second = summarize_in_subprocess(project / "Envfile", tmp_path / "cache")
    assert first["pydantic"] is True and second["pydantic"] is False
    assert first["summary"] == second["summary"]
    assert second["summary"]["machines"]["db"]["memory"] == 1024**3
    assert second["summary"]["files"] == ["setup.sh"]


def test_a_changed_envfile_is_validated_again(project):
    path = project / "Envfile"
    summarize(path, path.read_bytes())
    path.write_text(ENVFILE.replace('"1G"', '"lots"'))
    with pytest.raises(EnvfileError) as info:
        summarize(path, path.read_bytes())
    assert info.value.problems[0].path == "machines.db.memory"


def test_a_missing_script_is_reported_even_after_a_cached_success(project):
    path = project / "Envfile"
    summarize(path, path.read_bytes())
    (project / "setup.sh").unlink()
    with pytest.raises(EnvfileError) as info:
        summarize(path, path.read_bytes())
    assert info.value.problems[0].path == "machines.web.provision[0].script"


def test_same_bytes_elsewhere_are_checked_against_their_own_folder(project, tmp_path):
    summarize(project / "Envfile", (project / "Envfile").read_bytes())
    other = tmp_path / "other"
    other.mkdir()
    (other / "Envfile").write_text(ENVFILE)  # no setup.sh here
    with pytest.raises(EnvfileError):
        summarize(other / "Envfile", (other / "Envfile").read_bytes())
