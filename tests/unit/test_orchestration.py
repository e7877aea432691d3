"""The orchestration (vbox_cli/machines/) on a fake provider: order of operations, a
process killed at every phase boundary, one machine failing among several, drift
between the records and the hypervisor, exact ownership, corrupt state, NDJSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import providers.registry as registry
import tests.unit.fake_provider as fake
from boxes.store import BoxStore
from providers.base import NOT_CREATED, RUNNING, STOPPED
from providers.registry import ProviderInfo
from tests.unit.fake_provider import Killed, World, fake_connect, is_address, project_files
from tests.unit.test_machines import Recorder
from vbox_cli import machines
from vbox_cli.envfile.load import load
from vbox_cli.events import EventStream
from vbox_cli.project import Project, StateError

ENVFILE = """\
[machines.web]
provision = [{ shell = "echo web-1" }, { shell = "echo web-2" }, { shell = "echo every-up", run = "always" }]

[machines.db]
provision = [{ script = "scripts/db.sh", args = ["--init"] }]
"""


@pytest.fixture
def world(monkeypatch, tmp_path):
    monkeypatch.setattr(fake, "WORLD", World())
    monkeypatch.setattr(registry, "REGISTRY", {"lxc": ProviderInfo("lxc", "tests.unit.fake_provider:FakeProvider",
                                                                   "fake machine")})
    monkeypatch.setattr(registry, "_instances", {})
    monkeypatch.setenv("VBOX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VBOX_CACHE", str(tmp_path / "cache"))
    store = BoxStore(tmp_path / "home" / "boxes")
    staged = store.staging("debian-12")
    store.install(staged, "debian-12", "12.0.6", {"digest": "sha256:" + "0" * 64, "user": "vbox"})
    return fake.WORLD


class Env:
    """A project folder and a way to run a command on it as a new vbox process would."""

    def __init__(self, folder, text=ENVFILE):
        self.path = project_files(folder, text)
        (folder / "scripts").mkdir(exist_ok=True)
        (folder / "scripts" / "db.sh").write_text("#!/bin/sh\necho db \"$@\"\n")
        self.project = Project.at(folder)
        self.recorder = Recorder()

    def session(self):
        self.recorder = Recorder()
        return machines.Session(Project.at(self.path.parent), load(self.path), events=EventStream([self.recorder]),
                                connector=fake_connect, box_store=BoxStore())

    def run(self, command, *names, **options):
        session = self.session()
        with session.project.lock():
            return {r.machine: r for r in getattr(machines, command)(session, list(names), **options)}

    def phases(self, machine):
        return [e.phase.value for e in self.recorder.events if e.kind == "phase" and e.subject == machine]


def ran(world, machine, text):
    return sum(1 for c in world.commands.get(machine, []) if c.startswith("upload") and text in c)


def nothing_left(world, env):
    assert world.machines == {} and world.networks == {}
    assert not env.project.state_dir.exists()
    assert BoxStore().users("debian-12") == []


def test_up_creates_starts_and_provisions_each_machine_in_order(world, tmp_path):
    env = Env(tmp_path / "proj")
    results = env.run("up")
    assert {n: r.action for n, r in results.items()} == {"web": "created, started, provisioned",
                                                          "db": "created, started, provisioned"}
    for name in ("web", "db"):
        obj = env.project.object_name(name)
        order = [op for op, target in world.calls if target in (obj, f"vbox-{env.project.id}")]
        assert order[:3] == ["ensure_network", "create", "start"], order
        # with a snapshot before the first step and after each (machines/incremental.py)
        steps = 1 + 2 * (3 if name == "web" else 1)
        assert env.phases(name) == ["creating", "starting", "connecting", *["provisioning"] * steps, "ready"]
        record = env.project.machine_state(name)
        assert is_address(record["address"]) and record["address"].startswith("10.250.0.")
        assert world.machines[obj]["host_key"] == record["host_key"]
    dns = world.networks[f"vbox-{env.project.id}"]["dns"]
    assert set(dns) == {"web", "db"} and len(set(dns.values())) == 2
    assert ran(world, "web", "echo web-1") == 1 and ran(world, "db", "echo db") == 1
    assert BoxStore().users("debian-12") == sorted(env.project.object_name(n) for n in ("db", "web"))

    calls = len(world.calls)
    again = env.run("up")
    assert again["db"].action == "nothing to do" and again["web"].action == "provisioned"
    assert [op for op, _ in world.calls[calls:]] == ["ensure_network"]  # nothing made or started
    assert ran(world, "web", "echo every-up") == 2 and ran(world, "web", "echo web-1") == 1  # run = "always" only


def test_halt_up_provision_and_destroy(world, tmp_path):
    env = Env(tmp_path / "proj")
    env.run("up")
    halted = env.run("halt")
    assert {n: r.action for n, r in halted.items()} == {"web": "halted", "db": "halted"}
    assert {e["state"] for e in world.machines.values()} == {STOPPED}
    assert env.phases("web") == ["halting", "halted"]
    assert env.run("halt")["web"].action == "not running"
    back = env.run("up", "web")
    assert back["web"].action == "started, provisioned"  # the run = "always" step only
    assert ran(world, "web", "echo web-1") == 1 and ran(world, "web", "echo every-up") == 2
    assert world.machines[env.project.object_name("db")]["state"] == STOPPED  # not named: left alone
    forced = env.run("provision", "web", force=True)
    assert forced["web"].action == "provisioned (3 steps)" and ran(world, "web", "echo web-1") == 2
    refused = env.run("provision", "db", force=False)
    assert not refused["db"].ok and "db is not running" in refused["db"].error.message
    env.run("destroy")
    nothing_left(world, env)


def test_one_failing_machine_does_not_stop_the_others_and_the_next_up_finishes_it(world, tmp_path):
    env = Env(tmp_path / "proj")
    world.fail[("start", "db")] = "db: the hypervisor said no"
    results = env.run("up")
    assert results["web"].ok and not results["db"].ok
    assert results["db"].error.message == "db: the hypervisor said no"
    assert env.phases("db")[-1] == "failed" and env.phases("web")[-1] == "ready"
    outcome = {e.subject: e.ok for e in env.recorder.events if e.kind == "machine_result"}
    assert outcome == {"web": True, "db": False}
    assert world.machines[env.project.object_name("db")]["state"] == STOPPED  # created, not started
    del world.fail[("start", "db")]
    again = env.run("up")
    assert again["db"].action == "started, provisioned" and again["web"].action == "provisioned"
    env.run("destroy")
    nothing_left(world, env)


def test_a_failing_step_leaves_the_machine_up_and_is_run_again_next_time(world, tmp_path):
    env = Env(tmp_path / "proj", '[machines.web]\nprovision = [{ shell = "echo ok" }, { shell = "FAIL" }]\n')
    result = env.run("up")["web"]
    assert not result.ok and "provisioning step 2 (shell: FAIL) failed with exit status 3" in result.error.message
    assert world.machines[env.project.object_name("web")]["state"] == RUNNING
    assert len(env.project.machine_state("web")["provisioned"]) == 1  # step 1 is recorded, step 2 is not
    env.run("provision", "web", force=False)
    assert ran(world, "web", "echo ok") == 1 and ran(world, "web", "FAIL") == 2
    env.run("destroy")


KILL_POINTS = [("create", "web"), ("create-midway", "web"), ("start", "web"), ("connect", "web"),
               ("ssh-run", "web"), ("create", "db"), ("start", "db"), ("ssh-run", "db")]


@pytest.mark.parametrize("point", KILL_POINTS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_up_killed_at_any_phase_is_finished_by_the_next_up_and_undone_by_destroy(world, tmp_path, point):
    env = Env(tmp_path / "proj")
    world.kill.add(point)
    with pytest.raises(Killed):
        env.run("up", jobs=1)
    results = env.run("up")
    assert all(r.ok for r in results.values()), {n: r.error for n, r in results.items()}
    for name in ("web", "db"):
        obj = env.project.object_name(name)
        assert world.machines[obj]["state"] == RUNNING and world.machines[obj]["complete"]
        assert world.machines[obj]["host_key"] == env.project.machine_state(name)["host_key"]
        assert len(env.project.machine_state(name)["provisioned"]) == (2 if name == "web" else 1)
    assert ran(world, "web", "echo web-2") == 1 and ran(world, "db", "echo db") == 1
    env.run("destroy")
    nothing_left(world, env)


@pytest.mark.parametrize("verb,point", [("halt", ("halt", "db")), ("destroy", ("destroy", "db")),
                                        ("provision", ("ssh-run", "web"))])
def test_other_verbs_killed_midway_leave_what_up_and_destroy_handle(world, tmp_path, verb, point):
    env = Env(tmp_path / "proj")
    env.run("up")
    world.kill.add(point)
    with pytest.raises(Killed):
        env.run(verb, **({"force": True} if verb == "provision" else {}))
    results = env.run("up")
    assert all(r.ok for r in results.values())
    assert {e["state"] for e in world.machines.values()} == {RUNNING}
    env.run("destroy")
    nothing_left(world, env)


def test_destroy_keeps_the_project_key_when_a_machine_could_not_be_destroyed(world, tmp_path):
    env = Env(tmp_path / "proj")
    env.run("up")
    world.fail[("destroy", "db")] = "db: cannot remove it now"
    results = env.run("destroy")
    assert results["web"].ok and not results["db"].ok
    assert env.project.client_key.exists() and "db" in env.project.load_state()["machines"]
    assert any(e.kind == "warning" and "is kept" in e.text for e in env.recorder.events)
    del world.fail[("destroy", "db")]
    env.run("destroy")
    nothing_left(world, env)


def test_a_machine_leaves_its_network_entries_to_the_network_only_when_the_network_goes(world, tmp_path):
    env = Env(tmp_path / "proj")
    env.run("up")
    web, db = env.project.object_name("web"), env.project.object_name("db")
    env.run("destroy", "web")  # the network stays for db: web's entries in it go first
    assert world.network_going == {web: False}
    world.network_going.clear()
    env.run("destroy")  # the whole project: the network goes, and what each machine had in it
    assert world.network_going == {web: True, db: True}
    nothing_left(world, env)


def test_drift_between_the_records_and_the_hypervisor(world, tmp_path):
    env = Env(tmp_path / "proj")
    env.run("up")
    web = env.project.object_name("web")
    # removed behind vbox's back: status says so, up makes it again and provisions it
    del world.machines[web]
    rows = {r["name"]: r for r in machines.status(env.project, {"web": {"provider": "lxc", "box": "debian-12"},
                                                                "db": {"provider": "lxc", "box": "debian-12"}})}
    assert rows["web"]["state"] == NOT_CREATED and rows["db"]["state"] == RUNNING
    assert env.run("up", "web")["web"].action == "created, started, provisioned"
    assert ran(world, "web", "echo web-1") == 2
    # a machine vbox has no record of is not trusted: made anew
    env.project.update_state(lambda s: s["machines"]["web"].pop("host_key"))
    env.run("up", "web")
    assert any(e.kind == "note" and "no record of" in e.text for e in env.recorder.events)
    assert world.machines[web]["host_key"] == env.project.machine_state("web")["host_key"]
    # a machine the Envfile no longer declares: shown, then removed by destroy
    env.path.write_text('[machines.web]\nprovision = [{ shell = "echo web-1" }]\n')
    rows = {r["name"]: r for r in machines.status(env.project, {"web": {"provider": "lxc", "box": "debian-12"}})}
    assert rows["db"]["state"] == "running (not in the Envfile)"
    env.run("destroy")
    nothing_left(world, env)


def test_another_project_whose_id_begins_with_ours_is_never_touched(world, tmp_path):
    ours = Env(tmp_path / "demo")
    theirs = Env(tmp_path / f"{ours.project.id}-x")
    assert theirs.project.object_name("web").startswith(f"vbox-{ours.project.id}-")
    theirs.run("up")
    ours.run("up")
    ours.run("destroy")
    assert sorted(world.machines) == sorted(theirs.project.object_name(n) for n in ("web", "db"))
    assert {e["state"] for e in world.machines.values()} == {RUNNING}
    theirs.run("destroy")
    nothing_left(world, theirs)


@pytest.mark.parametrize("content", [b"", b"{not json", b"[]", b'{"machines": []}',
                                     b'{"machines": {"web": {"address": 7}}}', b'{"format": 99, "machines": {}}'])
def test_a_state_file_vbox_cannot_read_stops_the_command_and_destroys_nothing(world, tmp_path, content):
    env = Env(tmp_path / "proj")
    env.run("up")
    (env.project.state_dir / "state.json").write_bytes(content)
    for verb in ("up", "destroy", "provision", "halt"):
        with pytest.raises(StateError) as info:
            env.run(verb, **({"force": False} if verb == "provision" else {}))
        assert "state.json" in info.value.message and "changed nothing" in info.value.message
    with pytest.raises(StateError):
        machines.status(env.project, {"web": {"provider": "lxc", "box": "debian-12"}})
    assert {e["state"] for e in world.machines.values()} == {RUNNING} and len(world.machines) == 2


def test_events_are_ndjson_and_end_with_a_result_naming_the_failure(world, tmp_path, monkeypatch, capsys):
    from vbox_cli.app import run

    env = Env(tmp_path / "proj")
    monkeypatch.setattr("vbox_cli.machines.session._wait_for_ssh", fake_connect)
    monkeypatch.chdir(env.path.parent)
    world.fail[("create", "db")] = "db: no room for it"
    assert run(["up", "--events"], "vbox") == 1
    out = capsys.readouterr().out
    records = [json.loads(line) for line in out.splitlines()]  # every line parses
    assert all(r["v"] == 1 and r["command"] == "up" and isinstance(r["ts"], float) for r in records)
    assert {"phase", "output", "machine_result", "result"} <= {r["event"] for r in records}
    final = records[-1]
    assert final["event"] == "result" and final["exit_code"] == 1 and not final["ok"]
    assert "db: no room for it" in final["error"]
    assert [r["ok"] for r in records if r["event"] == "machine_result" and r["machine"] == "db"] == [False]
    phases = [r["phase"] for r in records if r["event"] == "phase" and r["machine"] == "web"]
    assert phases == ["creating", "starting", "connecting", *["provisioning"] * 7, "ready"]  # 3 steps, 4 snapshots
    # an Envfile error before any machine: still one result line, naming it
    env.path.write_text("[machines.web]\nmemroy = 1\n")
    assert run(["destroy", "-f", "--events"], "vbox") == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["event"] == "result"
    assert json.loads(lines[0])["exit_code"] == 2 and "Envfile: 1 problem" in json.loads(lines[0])["error"]
    # destroy without -f: no one to ask, refused, and said so on the stream too
    assert run(["destroy", "--events"], "vbox") == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "no terminal to ask on" in json.loads(lines[0])["error"]
    del world.fail[("create", "db")]
    env.path.write_text(ENVFILE)
    assert run(["destroy", "-f", "--events"], "vbox") == 0
    final = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (final["command"], final["event"], final["ok"], final["exit_code"]) == ("destroy", "result", True, 0)
    assert "error" not in final
    nothing_left(world, env)


def test_an_lxc_project_with_libvirt_unreachable(world, tmp_path, monkeypatch):
    """status and destroy of a project whose machines do not need libvirt work while it is
    down; the project network (which libvirt holds) is kept, and so is .vbox/, until a
    destroy can remove it."""
    monkeypatch.setitem(registry.REGISTRY, "kvm", ProviderInfo("kvm", "tests.unit.fake_provider:UnreachableProvider",
                                                              "unreachable machine"))
    env = Env(tmp_path / "proj")
    env.run("up")
    rows = machines.status(env.project, {n: {"provider": "lxc", "box": "debian-12"} for n in ("web", "db")})
    assert [r["state"] for r in rows] == [RUNNING, RUNNING]
    world.fail[("remove_network", env.project.id)] = "cannot reach libvirt at qemu:///system"
    results = env.run("destroy")
    assert all(r.ok for r in results.values()) and not [n for n in world.machines]
    assert env.project.state_dir.exists() and env.project.client_key.exists()
    warnings = [e.text for e in env.recorder.events if e.kind == "warning"]
    assert any("could not remove the project network" in w for w in warnings)
    assert any("is kept" in w for w in warnings)
    del world.fail[("remove_network", env.project.id)]
    env.run("destroy")
    nothing_left(world, env)


def test_a_failure_is_one_line_in_a_summary_within_80_columns(world, tmp_path, monkeypatch, capsys):
    from vbox_cli.app import run

    env = Env(tmp_path / "proj")
    monkeypatch.setattr("vbox_cli.machines.session._wait_for_ssh", fake_connect)
    monkeypatch.chdir(env.path.parent)
    world.fail[("start", "db")] = ("db: LXC could not start the container: cgroup limits could not be set "
                                   + "x" * 120 + "\nlxc-start: first log line\nlxc-start: second log line")
    assert run(["--plain", "up"], "vbox") == 1
    captured = capsys.readouterr()
    table = captured.out[captured.out.index("MACHINE"):].splitlines()
    assert all(len(line) <= 80 for line in table), table
    assert any(line.startswith("db ") and "FAILED: LXC could not start the container" in line for line in table)
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: db: LXC could not start the container: cgroup")
    assert "first log line" not in captured.err and "--verbose shows the details" in captured.err
    assert "hint: the full log: /var/log/fake.log" in captured.err
    assert run(["--plain", "--verbose", "up", "db"], "vbox") == 1
    assert "    lxc-start: first log line" in capsys.readouterr().err
    del world.fail[("start", "db")]
    assert run(["--plain", "destroy", "-f"], "vbox") == 0
    nothing_left(world, env)


def test_the_summary_says_what_was_done_each_phase_and_the_address(world, tmp_path, monkeypatch, capsys):
    import re

    from vbox_cli.app import run

    env = Env(tmp_path / "proj")
    monkeypatch.setattr("vbox_cli.machines.session._wait_for_ssh", fake_connect)
    monkeypatch.chdir(env.path.parent)
    assert run(["--plain", "up"], "vbox") == 0
    out = capsys.readouterr().out
    summary = out[out.index("MACHINE"):].splitlines()
    assert summary[0].split() == ["MACHINE", "RESULT", "ADDRESS", "SECONDS"]
    web = next(line for line in summary if line.startswith("web "))
    assert env.project.machine_state("web")["address"] in web and "created, started, provisioned" in web
    phases = next(line for line in summary if line.startswith("  web: "))
    assert re.fullmatch(r"  web: creating [\d.]+ s, starting [\d.]+ s, connecting [\d.]+ s, provisioning [\d.]+ s",
                        phases), phases  # the three steps' provisioning (and snapshots between them) as one phase
    assert all(len(line) <= 80 for line in summary)
    assert run(["--plain", "destroy", "-f"], "vbox") == 0


def test_a_vm_from_a_box_vbox_did_not_build_that_never_answers_gets_a_hint(world, monkeypatch, tmp_path):
    """A Vagrant box whose systemd is older than 252 never takes its keys: the SSH failure says
    so, for VMs of such boxes only."""
    from vbox_cli.errors import VboxError

    monkeypatch.setitem(registry.REGISTRY, "kvm", ProviderInfo("kvm", "tests.unit.fake_provider:FakeProvider",
                                                               "fake VM"))
    store = BoxStore(tmp_path / "home" / "boxes")
    store.install(store.staging("old/vagrant"), "old/vagrant", "0", {"digest": "sha256:" + "1" * 64,
                                                                     "user": "vagrant"})
    store.install(store.staging("mine"), "mine", "1", {"digest": "sha256:" + "2" * 64, "user": "vbox",
                                                       "recipe": "debian-12.toml"})

    def never(target, timeout, log):
        raise VboxError(f"{target.name}: SSH did not answer within 1 s (Authentication failed.)", hint="raise it")

    results = {}
    for box in ("old/vagrant", "mine"):
        env = Env(tmp_path / box.replace("/", "-"), f'[machines.vm]\nprovider = "kvm"\nbox = "{box}"\n')
        session = env.session()
        session.connector = never
        with session.project.lock():
            results[box] = machines.up(session, ["vm"])[0]
    assert "systemd 252" in results["old/vagrant"].error.hint and "raise it" in results["old/vagrant"].error.hint
    assert results["mine"].error.hint == "raise it"


ORDERED = """\
[machines.web]
depends_on = ["db", "cache"]
provision = [{ shell = "echo web" }]

[machines.db]
provision = [{ shell = "echo db-1" }, { shell = "echo db-2" }]

[machines.cache]
depends_on = ["db"]
provision = [{ shell = "echo cache" }]

[machines.tools]
autostart = false
provision = [{ shell = "echo tools" }]
"""


def _runs(world) -> list[str]:
    return [entry.split(":", 1)[1] for entry in world.timeline if entry.startswith("ssh-run:")]


def _last(items: list[str], value: str) -> int:
    return len(items) - 1 - items[::-1].index(value)


@pytest.mark.parametrize("jobs", [None, 1, 2])
def test_steps_run_in_depends_on_order_and_machines_boot_first(world, tmp_path, jobs):
    """web waits for db and cache, cache for db; with one or two workers too (a machine
    waiting holds no worker a dependency needs: the runner hands dependencies first)."""
    import threading

    env = Env(tmp_path / "proj", ORDERED)
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(env.run("up", jobs=jobs)))
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "up deadlocked"
    assert all(r.ok for r in done.values()) and "tools" not in done
    runs = _runs(world)
    assert _last(runs, "db") < runs.index("cache") and _last(runs, "cache") < runs.index("web"), runs
    env.run("destroy")
    nothing_left(world, env)


def test_env_up_of_a_machine_brings_up_what_it_depends_on(world, tmp_path):
    env = Env(tmp_path / "proj", ORDERED)
    results = env.run("up", "web")
    assert set(results) == {"db", "cache", "web"}  # not tools
    assert [n for n in results] == ["db", "cache", "web"]  # dependencies first
    env.run("destroy")


def test_a_machine_whose_dependency_failed_is_up_but_not_provisioned(world, tmp_path):
    env = Env(tmp_path / "proj", ORDERED)
    world.fail[("ssh-run", "db")] = "db: step 1 failed"
    results = env.run("up")
    assert not results["db"].ok
    for name in ("cache", "web"):
        assert not results[name].ok
        assert results[name].error.message.endswith("not provisioned, because db, which it depends on, failed")
        assert world.machines[env.project.object_name(name)]["state"] == RUNNING  # booted all the same
        assert name not in _runs(world)
    del world.fail[("ssh-run", "db")]
    again = env.run("up")
    assert all(r.ok for r in again.values())
    runs = _runs(world)
    assert _last(runs, "db") < runs.index("cache") < runs.index("web")
    env.run("destroy")
    nothing_left(world, env)


def test_provision_keeps_the_order_too(world, tmp_path):
    env = Env(tmp_path / "proj", ORDERED)
    env.run("up")
    world.timeline.clear()
    env.run("provision", force=True)
    runs = _runs(world)
    assert _last(runs, "db") < runs.index("cache") and _last(runs, "cache") < runs.index("web"), runs
    env.run("destroy")


PROTECTED = """\
[machines.web]

[machines.db]
protect = true

[machines.later]
protect = true
autostart = false
"""


def test_destroy_refuses_a_protected_machine_and_destroys_nothing(world, tmp_path):
    from vbox_cli.errors import VboxError

    env = Env(tmp_path / "proj", PROTECTED)
    env.run("up")
    for names in ((), ("db",), ("web", "db")):
        with pytest.raises(VboxError, match="db is protected") as refused:
            env.run("destroy", *names)
        assert "nothing was destroyed" in refused.value.message and "--force-protected" in refused.value.hint
        assert len(world.machines) == 2
    env.run("destroy", "web")  # not protected; `later` (protected) was never made: no refusal either
    assert [e["machine"] for e in world.machines.values()] == ["db"]
    env.run("destroy", force_protected=True)
    nothing_left(world, env)


def test_up_abort_on_error_destroys_what_it_made_and_only_that(world, tmp_path):
    text = '[machines.web]\n\n[machines.db]\nprovision = [{ shell = "echo db" }]\n'
    env = Env(tmp_path / "proj", text)
    world.fail[("ssh-run", "db")] = "db: step 1 failed"
    results = env.run("up", abort_on_error=True)
    assert not results["db"].ok and results["web"].action == "made, then destroyed (--abort-on-error)"
    nothing_left(world, env)  # the network and .vbox/ too: this up had made them
    del world.fail[("ssh-run", "db")]
    env.run("up", "web")
    world.fail[("start", "db")] = "db: the hypervisor said no"
    results = env.run("up", abort_on_error=True)
    assert not results["db"].ok
    assert [e["machine"] for e in world.machines.values()] == ["web"]  # there before this up: kept
    assert env.project.machine_state("web") and not env.project.machine_state("db")
    del world.fail[("start", "db")]
    env.run("destroy")
    nothing_left(world, env)


def test_abort_on_error_with_a_machine_not_brought_up_still_leaves_nothing(world, tmp_path):
    text = '[machines.web]\nprovision = [{ shell = "echo web" }]\n\n[machines.spare]\nautostart = false\n'
    env = Env(tmp_path / "proj", text)
    world.fail[("ssh-run", "web")] = "web: step 1 failed"
    env.run("up", abort_on_error=True)
    nothing_left(world, env)


TRIGGERS = """\
[machines.web]
provision = [{ shell = "echo web" }]
triggers = [
  { before = "up", run = "echo before-up $VBOX_MACHINE $VBOX_VERB >> triggers.log" },
  { after = "up", run = "echo after-up $VBOX_ADDRESS_WEB $VBOX_ADDRESS_DB_1 >> triggers.log" },
  { after = "up", run_in = "db-1", shell = "echo from web" },
  { before = "halt", run = "echo before-halt >> triggers.log" },
  { after = "halt", run = "echo after-halt >> triggers.log" },
  { before = "reload", run = "echo before-reload >> triggers.log" },
  { after = "reload", run = "echo after-reload >> triggers.log" },
  { before = "provision", run = "echo before-provision >> triggers.log" },
  { after = "provision", run = "echo after-provision >> triggers.log" },
  { before = "destroy", run = "echo before-destroy; echo before-destroy >> triggers.log" },
  { after = "destroy", run = "echo after-destroy >> triggers.log" },
]

[machines.db-1]
"""


def _log(env) -> list[str]:
    path = env.path.parent / "triggers.log"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def test_triggers_run_around_each_verb_on_the_host_and_in_machines(world, tmp_path):
    env = Env(tmp_path / "proj", TRIGGERS)
    env.run("up")
    address = {n: env.project.machine_state(n)["address"] for n in ("web", "db-1")}
    assert _log(env) == ["before-up web up", f"after-up {address['web']} {address['db-1']}"]
    assert any("echo from web" in c for c in world.commands["db-1"])  # in db-1, over its SSH
    env.run("provision", "web", force=False)
    assert _log(env) == ["before-provision", "after-provision"]
    env.run("halt", "web")
    assert _log(env) == ["before-halt", "after-halt"]
    env.run("up", "web")
    assert _log(env) == ["before-up web up", f"after-up {address['web']} {address['db-1']}"]
    env.run("halt", "web", verb="reload")
    env.run("up", "web", verb="reload")
    assert _log(env) == ["before-reload", "after-reload"]  # reload's own, not halt's and up's
    env.run("destroy")
    assert "before-destroy" in [e.text for e in env.recorder.events if e.kind == "output" and e.subject == "web"]
    assert _log(env) == ["before-destroy", "after-destroy"]
    nothing_left(world, env)


def test_a_failing_before_trigger_stops_the_verb_for_its_machine_only(world, tmp_path):
    text = ('[machines.web]\ntriggers = [{ before = "destroy", run = "echo no backup; exit 4" }]\n\n'
            '[machines.db]\ntriggers = [{ after = "up", run = "exit 5" }]\n')
    env = Env(tmp_path / "proj", text)
    up = env.run("up")
    assert up["web"].ok and not up["db"].ok
    assert up["db"].error.message == "db: up done, but its after-up trigger (run: exit 5) failed with exit status 5"
    assert world.machines[env.project.object_name("db")]["state"] == RUNNING  # after: the verb was done
    gone = env.run("destroy", "web", "db")
    assert not gone["web"].ok and "its before-destroy trigger (run: echo no backup; exit 4) failed with exit " \
                                  "status 4" in gone["web"].error.message
    assert "nothing of `destroy` was done to web" in gone["web"].error.hint
    assert [e["machine"] for e in world.machines.values()] == ["web"]  # db went; web was kept


def test_a_trigger_in_a_machine_that_is_not_running_is_skipped_and_said(world, tmp_path):
    text = ('[machines.web]\ntriggers = [{ after = "destroy", run_in = "web", shell = "echo gone" }]\n')
    env = Env(tmp_path / "proj", text)
    env.run("up")
    assert env.run("destroy")["web"].ok
    warnings = [e.text for e in env.recorder.events if e.kind == "warning"]
    assert "web: web is not running: its trigger (after destroy) did not run" in warnings


def test_host_triggers_are_asked_for_once_and_again_when_changed(world, tmp_path):
    from vbox_cli.errors import UsageError, VboxError
    from vbox_cli.machines.triggers import approve

    env = Env(tmp_path / "proj", TRIGGERS)
    loaded = load(env.path)
    asked = []

    def confirm(answer):
        return lambda text: asked.append(text) or answer

    with pytest.raises(UsageError, match="not accepted here"):
        approve(loaded, "up", yes=False, interactive=False, confirm=confirm(True))
    with pytest.raises(VboxError, match="not accepted: nothing was done"):
        approve(loaded, "up", yes=False, interactive=True, confirm=confirm(False))
    assert "web, before up: echo before-up $VBOX_MACHINE $VBOX_VERB >> triggers.log" in asked[-1]
    approve(loaded, "up", yes=False, interactive=True, confirm=confirm(True))
    asked.clear()
    approve(loaded, "destroy", yes=False, interactive=False, confirm=confirm(True))  # all were accepted at once
    assert asked == []
    env.path.write_text(TRIGGERS.replace("echo after-halt", "echo changed"))
    changed = load(env.path)
    approve(changed, "up", yes=False, interactive=False, confirm=confirm(True))  # not for up: not asked
    with pytest.raises(UsageError) as refused:
        approve(changed, "halt", yes=False, interactive=False, confirm=confirm(True))
    assert "echo changed" in refused.value.message and "before-up" not in refused.value.message
    approve(changed, "halt", yes=True, interactive=False, confirm=confirm(False))  # --yes
    approve(changed, "halt", yes=False, interactive=False, confirm=confirm(False))


@pytest.mark.skipif(os.geteuid() != 0, reason="runs env as root through sudo")
def test_under_sudo_a_host_trigger_runs_as_the_user_who_called_sudo(world, tmp_path, monkeypatch):
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    folder = Path(tempfile.mkdtemp(prefix="vbox-trigger-user-"))
    try:
        os.chmod(folder, 0o777)
        env = Env(folder / "proj", '[machines.web]\ntriggers = [{ before = "up", run = "id -u; echo $HOME" }]\n')
        os.chmod(folder / "proj", 0o777)
        monkeypatch.setenv("SUDO_UID", str(nobody.pw_uid))
        env.run("up")
        lines = [e.text for e in env.recorder.events if e.kind == "output" and e.subject == "web"]
        assert lines[:2] == [str(nobody.pw_uid), nobody.pw_dir]
        env.run("destroy")
    finally:
        shutil.rmtree(folder)


def test_a_machine_keeps_the_box_it_was_made_from_when_a_newer_one_comes(world, tmp_path):
    env = Env(tmp_path)
    env.run("up", "web")
    store = BoxStore()
    staged = store.staging("debian-12")
    store.install(staged, "debian-12", "12.0.7", {"digest": "sha256:" + "1" * 64, "user": "vbox"})
    env.run("halt", "web")
    env.run("up", "web", "db")
    assert world.machines[env.project.object_name("web")]["started_from"] == "12.0.6"  # its root is on that tree
    assert world.machines[env.project.object_name("db")]["started_from"] == "12.0.7"  # a new machine: the newest
