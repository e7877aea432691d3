"""The CLI as a user runs it: verbs, output modes, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
VBOX = Path(sys.executable).parent / "vbox"


def vbox(*args, cwd=None, home=None, check_rc=None):
    environ = dict(os.environ)
    if home is not None:
        environ["VBOX_HOME"] = str(home)
    result = subprocess.run([str(VBOX), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    if check_rc is not None:
        assert result.returncode == check_rc, (result.stdout, result.stderr)
    return result


def test_init_then_validate(tmp_path):
    result = vbox("init", cwd=tmp_path, check_rc=0)
    assert "wrote" in result.stdout
    assert (tmp_path / ".gitignore").read_text() == ".vbox/\n"
    assert vbox("validate", cwd=tmp_path, check_rc=0).stdout.strip() == "Envfile: 2 machines OK"
    # a second init refuses, and --force does not add .vbox/ to .gitignore twice
    again = vbox("init", cwd=tmp_path, check_rc=2)
    assert "exists already" in again.stderr and "hint: " in again.stderr
    vbox("init", "--force", cwd=tmp_path, check_rc=0)
    assert (tmp_path / ".gitignore").read_text() == ".vbox/\n"


def test_init_keeps_an_existing_gitignore(tmp_path):
    (tmp_path / ".gitignore").write_text("node_modules")
    vbox("init", cwd=tmp_path, check_rc=0)
    assert (tmp_path / ".gitignore").read_text() == "node_modules\n.vbox/\n"


def test_validate_finds_the_envfile_above(tmp_path):
    vbox("init", cwd=tmp_path, check_rc=0)
    sub = tmp_path / "src" / "deep"
    sub.mkdir(parents=True)
    assert "2 machines OK" in vbox("validate", cwd=sub, check_rc=0).stdout


def test_validate_example_with_file_option():
    result = vbox("--file", str(REPO / "Envfile.example"), "validate", check_rc=0)
    assert result.stdout.strip().endswith("2 machines OK")


def test_validate_reports_problems_with_locations_and_exit_2(tmp_path):
    (tmp_path / "Envfile").write_text('[machines.web]\nmemroy = "1G"\ncpus = 0\n')
    result = vbox("validate", cwd=tmp_path, check_rc=2)
    lines = result.stderr.splitlines()
    assert lines[0] == "Envfile:2:1: machines.web.memroy: unknown key 'memroy'"
    assert lines[1] == "    hint: did you mean 'memory'?"
    assert lines[2].startswith("Envfile:3:1: machines.web.cpus: ")
    assert lines[-1] == "error: Envfile: 2 problems"
    assert result.stdout == ""


def test_validate_json(tmp_path):
    (tmp_path / "Envfile").write_text('[machines.web]\nprovider = "kvmm"\n')
    bad = json.loads(vbox("validate", "--json", cwd=tmp_path, check_rc=2).stdout)
    assert bad["ok"] is False
    assert bad["problems"] == [{"file": "Envfile", "line": 2, "column": 1, "path": "machines.web.provider",
                                "message": "must be 'lxc', 'kvm' or 'xen'; got 'kvmm'",
                                "hint": "did you mean 'kvm'?"}]
    (tmp_path / "Envfile").write_text('[machines.web]\nprovider = "kvm"\nmemory = "2G"\n')
    good = json.loads(vbox("validate", "--json", cwd=tmp_path, check_rc=0).stdout)
    assert good["ok"] is True
    assert good["machines"]["web"]["memory"] == 2 * 1024**3
    assert good["machines"]["web"]["provider"] == "kvm"


def test_schema_is_json_schema_of_the_envfile():
    schema = json.loads(vbox("schema", check_rc=0).stdout)
    assert schema["title"] == "vbox Envfile"
    assert set(schema["properties"]) == {"defaults", "machines"}
    assert schema["additionalProperties"] is False
    assert "machines" in schema["required"]


def test_usage_errors_exit_2_with_hint():
    result = vbox("validate", "--no-such-flag", check_rc=2)
    assert result.stderr.startswith("error: No such option") and "--no-such-flag" in result.stderr
    assert "hint: see `vbox validate --help`" in result.stderr
    assert vbox("frobnicate", check_rc=2).stderr.startswith("error: No such command")


def test_help_explains_each_verb():
    out = vbox("--help", check_rc=0).stdout
    for verb in ("init", "validate", "schema", "box", "doctor"):
        assert verb in out
    assert "system's env" in out
    box_help = vbox("box", "build", "--help", check_rc=0).stdout
    assert "debootstrap" in box_help and "--mirror" in box_help


def test_box_list_on_an_empty_store(tmp_path):
    assert "no boxes in" in vbox("box", "list", home=tmp_path, check_rc=0).stdout
    assert json.loads(vbox("box", "list", "--json", home=tmp_path, check_rc=0).stdout) == []


def test_box_build_unknown_recipe(tmp_path):
    result = vbox("box", "build", "debian-99", home=tmp_path, check_rc=2)
    assert "no box recipe named 'debian-99'" in result.stderr
    assert "debian-12" in result.stderr  # the hint lists the known recipes


def test_box_build_invalid_recipe_file(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('name = "Bad Name"\nversion = "1"\nsuite = "bookworm"\nmirror = "ftp://x"\nsudo = 1\n')
    result = vbox("box", "build", str(recipe), home=tmp_path, check_rc=2)
    assert "name: 'Bad Name' is not a box name" in result.stderr
    assert "mirror" in result.stderr and "sudo" in result.stderr


def test_box_remove_refuses_a_box_in_use(tmp_path):
    from boxes.store import BoxStore

    store = BoxStore(tmp_path / "boxes")
    staged = store.staging("tiny")
    (staged / "vmlinuz").write_bytes(b"k")
    store.install(staged, "tiny", "1", {"digest": "sha256:" + "0" * 64, "size": 1, "built": "2026-01-01T00:00:00Z"})
    store.add_user("tiny", "vbox-abc123-web", {"project": str(tmp_path), "machine": "web"})
    listed = json.loads(vbox("box", "list", "--json", home=tmp_path, check_rc=0).stdout)
    assert [(b["name"], b["version"], b["used_by"]) for b in listed] == [("tiny", "1", ["vbox-abc123-web"])]
    refused = vbox("box", "remove", "tiny", home=tmp_path, check_rc=2)
    assert "used by 1 machine: vbox-abc123-web" in refused.stderr
    assert store.find("tiny") is not None
    store.remove_user("tiny", "vbox-abc123-web")
    vbox("box", "remove", "tiny", home=tmp_path, check_rc=0)
    assert store.find("tiny") is None
    assert vbox("box", "remove", "tiny", home=tmp_path, check_rc=2).stderr.startswith("error: no box named")


def test_box_remove_force(tmp_path):
    from boxes.store import BoxStore

    store = BoxStore(tmp_path / "boxes")
    staged = store.staging("tiny")
    store.install(staged, "tiny", "1", {"digest": "sha256:" + "1" * 64})
    store.add_user("tiny", "vbox-abc123-web", {})
    vbox("box", "remove", "tiny", "--force", home=tmp_path, check_rc=0)
    assert store.boxes() == []


def test_plain_output_is_a_plain_table(tmp_path):
    from boxes.store import BoxStore

    store = BoxStore(tmp_path / "boxes")
    store.install(store.staging("tiny"), "tiny", "2", {"digest": "sha256:" + "a" * 64, "size": 3 * 1024**2,
                                                        "built": "2026-11-22T10:00:00Z"})
    out = vbox("--plain", "box", "list", home=tmp_path, check_rc=0).stdout.splitlines()
    assert out[0].split() == ["NAME", "VERSION", "DIGEST", "SIZE", "ARTEFACTS", "BUILT"]
    assert out[1].split()[:3] == ["tiny", "2", "sha256:aaaaaaaaaaaa"]
    assert "\x1b[" not in "".join(out)


def test_box_remove_drops_records_of_machines_that_no_longer_exist(tmp_path):
    from boxes.store import BoxStore

    store = BoxStore(tmp_path / "boxes")
    store.install(store.staging("tiny"), "tiny", "1", {"digest": "sha256:" + "2" * 64})
    # an LXC machine that was never made here (its project folder deleted without destroy)
    store.add_user("tiny", "vbox-gone-abcdef-web", {"machine": "web", "provider": "lxc"})
    result = vbox("box", "remove", "tiny", home=tmp_path, check_rc=0)
    assert "dropped the record of vbox-gone-abcdef-web" in result.stdout
    assert store.boxes() == [] and store.users("tiny") == []


def test_xen_where_no_xen_host_answers(tmp_path):
    """This host runs no Xen: status says so per machine, and up fails before it makes
    anything, with one error naming the URI it tried."""
    from providers.network import bridge_name
    from vbox_cli.project import project_id

    (tmp_path / "Envfile").write_text('[machines.guest]\nprovider = "xen"\n[machines.ct]\n')
    rows = json.loads(vbox("status", "--json", cwd=tmp_path, home=tmp_path / "home", check_rc=0).stdout)["machines"]
    states = {r["name"]: r["state"] for r in rows}
    assert states["ct"] == "not created"
    assert states["guest"].startswith("unknown: the host xen:///system does not answer")
    up = vbox("up", "guest", cwd=tmp_path, home=tmp_path / "home", check_rc=1)
    assert "guest" in up.stderr and "the host xen:///system does not answer" in up.stderr
    assert "name a Xen host with `host`" in up.stderr
    assert not Path(f"/sys/class/net/{bridge_name(project_id(tmp_path))}").exists()  # no network made
    state = tmp_path / ".vbox" / "state.json"
    assert not state.exists() or "guest" not in json.loads(state.read_text()).get("machines", {})


def test_host_is_refused_for_lxc_machines_at_validate(tmp_path):
    (tmp_path / "Envfile").write_text('[machines.ct]\nhost = "qemu+ssh://root@server/system"\n')
    for verb in ("validate", "up"):
        result = vbox(verb, cwd=tmp_path, home=tmp_path / "home", check_rc=2)
        assert "Envfile:2:1: machines.ct.host: `host` is for machines that can live on another libvirt host; " \
               "machine 'ct' is lxc" in result.stderr
        assert "remove `host` from [machines.ct]" in result.stderr
    assert not (tmp_path / ".vbox").exists()


def test_up_without_names_leaves_autostart_false_machines_alone(tmp_path):
    (tmp_path / "Envfile").write_text('[machines.manual]\nautostart = false\n')
    from providers.network import bridge_name
    from vbox_cli.project import project_id

    result = vbox("up", cwd=tmp_path, home=tmp_path / "home", check_rc=0)
    assert "no machines selected" in result.stdout and "manual" not in result.stdout
    assert not Path(f"/sys/class/net/{bridge_name(project_id(tmp_path))}").exists()  # no network made


def test_lock_and_diff(tmp_path):
    """`env lock` writes the lock and says what changed when it rewrites it; `env diff`
    exits 1 naming each difference, 0 when the project agrees with it."""
    from boxes.store import BoxStore

    home = tmp_path / "home"
    store = BoxStore(home / "boxes")
    staged = store.staging("debian-12")
    (staged / "rootfs").mkdir()
    store.install(staged, "debian-12", "12.0.1", {"digest": "sha256:" + "1" * 64, "user": "vbox"})
    project = tmp_path / "p"
    (project / "scripts").mkdir(parents=True)
    (project / "scripts" / "a.sh").write_text("echo a\n")
    (project / "Envfile").write_text('[defaults]\nbox = "debian-12"\nprovider = "lxc"\n[machines.web]\n'
                                     'provision = [{ script = "scripts/a.sh" }]\n')
    diff = vbox("diff", cwd=project, home=home, check_rc=1)
    assert "there is no Envfile.lock" in diff.stdout
    assert "wrote Envfile.lock (1 machine)" in vbox("lock", cwd=project, home=home, check_rc=0).stdout
    assert "no differences" in vbox("diff", cwd=project, home=home, check_rc=0).stdout
    (project / "scripts" / "a.sh").write_text("echo changed\n")
    diff = vbox("diff", cwd=project, home=home, check_rc=1)
    assert diff.stdout.strip() == "lock: web: step 1 (script) changed (its settings or a file it reads)"
    relock = vbox("lock", cwd=project, home=home, check_rc=0)
    assert "web: step 1 (script) changed" in relock.stdout and "updated Envfile.lock" in relock.stdout
    assert "unchanged: Envfile.lock" in vbox("lock", cwd=project, home=home, check_rc=0).stdout
