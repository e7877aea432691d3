"""Shell completion: verbs, machine names from the Envfile, box names; `env` answers the
shell's completion request instead of passing it to coreutils' env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def complete(words: str, cwd: Path, prog: str = "env", home: Path | None = None) -> list[str]:
    env = {**os.environ, f"_{prog.upper()}_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    if home:
        env["VBOX_HOME"] = str(home)
    result = subprocess.run([str(BIN / prog)], cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_machine_names_verbs_and_boxes(tmp_path):
    (tmp_path / "Envfile").write_text("[machines.web]\n[machines.db]\n[machines.worker]\n")
    assert complete("env up w", tmp_path) == ["web", "worker"]
    assert complete("env ssh ", tmp_path) == ["web", "db", "worker"]
    assert complete("env halt d", tmp_path) == ["db"]
    assert {"ssh", "ssh-config", "schema", "status"} <= set(complete("env s", tmp_path))
    from boxes.store import BoxStore

    store = BoxStore(tmp_path / "home" / "boxes")
    store.install(store.staging("tiny"), "tiny", "1", {"digest": "sha256:" + "0" * 64})
    assert complete("vbox box remove t", tmp_path, "vbox", tmp_path / "home") == ["tiny"]
    assert "debian-12" in complete("vbox box build d", tmp_path, "vbox")


def test_no_envfile_or_a_broken_one_offers_nothing(tmp_path):
    assert complete("env up ", tmp_path) == []
    (tmp_path / "Envfile").write_text("[machines.web\n")
    assert complete("env up ", tmp_path) == []


def test_without_the_shell_asking_env_is_coreutils(tmp_path):
    out = subprocess.run([str(BIN / "env")], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "ONLY": "this"},
                         capture_output=True, text=True, timeout=30).stdout
    assert "ONLY=this" in out.splitlines()
