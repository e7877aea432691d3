"""`env snapshot` on the fake provider: what vbox records with a snapshot and puts back
on a restore, a running machine flushed before and started after, refusals."""

from __future__ import annotations

import pytest

from providers.base import RUNNING, STOPPED, check_snapshot_name
from tests.unit.test_orchestration import Env, world  # noqa: F401 - the fixture
from vbox_cli.errors import VboxError
from vbox_cli.machines import snapshots

ENVFILE = """\
[machines.web]
provision = [{ shell = "echo step-1" }, { shell = "echo step-2" }]
"""


def call(env, work, *args):
    session = env.session()
    with session.project.lock():
        return work(session, *args)


def obj(env):
    return env.project.object_name("web")


def test_a_restore_puts_back_the_disk_and_the_steps_that_had_run(world, tmp_path):
    env = Env(tmp_path, ENVFILE)
    env.run("up")
    assert call(env, snapshots.save, "web", "base") == "saved base (running)"
    commands = world.commands["web"]
    assert commands[-1] == "sync", "a running VM's file systems are flushed before its disk is saved"
    recorded = env.project.machine_state("web")["snapshots"]["base"]["provisioned"]
    assert len(recorded) == 2
    # a third step, run after the snapshot
    (tmp_path / "Envfile").write_text(ENVFILE.replace('"echo step-2" }', '"echo step-2" }, { shell = "echo step-3" }'))
    env.run("provision", "web", force=False)
    assert len(env.project.machine_state("web")["provisioned"]) == 3
    world.calls.clear()
    assert call(env, snapshots.restore, "web", None) == "restored base, started"
    assert [c for c, _ in world.calls if c in ("halt", "snapshot_restore", "start")] == \
        ["halt", "snapshot_restore", "start"]
    assert world.machines[obj(env)]["state"] == RUNNING
    assert env.project.machine_state("web")["provisioned"] == recorded
    assert not any("step-3" in c for c in world.commands["web"]), "the disk is the snapshot's"
    env.run("provision", "web", force=False)
    assert sum("step-3" in c for c in world.commands["web"]) == 1, "provision runs the step run since"
    assert not any("step-1" in c for c in world.commands["web"][len(commands):])


def test_a_stopped_machine_is_restored_stopped_and_saved_without_ssh(world, tmp_path):
    env = Env(tmp_path, ENVFILE)
    env.run("up")
    env.run("halt")
    world.commands["web"] = []
    assert call(env, snapshots.save, "web", "cold") == "saved cold"
    assert world.commands["web"] == [], "nothing runs in a stopped machine"
    assert call(env, snapshots.restore, "web", "cold") == "restored cold"
    assert world.machines[obj(env)]["state"] == STOPPED
    rows = call(env, snapshots.listing, ["web"])
    assert [(r["name"], r["taken_while"], r["provisioned_steps"]) for r in rows] == [("cold", "stopped", 2)]


def test_the_newest_is_restored_without_a_name_and_names_are_unique(world, tmp_path):
    env = Env(tmp_path, ENVFILE)
    env.run("up")
    call(env, snapshots.save, "web", "one")
    call(env, snapshots.save, "web", "two")
    with pytest.raises(VboxError, match="has a snapshot named two already"):
        call(env, snapshots.save, "web", "two")
    assert call(env, snapshots.restore, "web", None) == "restored two, started"
    with pytest.raises(VboxError, match="no snapshot named 'three'"):
        call(env, snapshots.restore, "web", "three")
    assert call(env, snapshots.delete, "web", "one") == "deleted one"
    assert [s["name"] for s in call(env, snapshots.listing, ["web"])] == ["two"]  # vbox's own between steps hidden
    assert [n for n in env.project.machine_state("web")["snapshots"] if not n.startswith("vbox-step-")] == ["two"]


def test_a_machine_that_is_not_there_or_has_none(world, tmp_path):
    env = Env(tmp_path, ENVFILE)
    with pytest.raises(VboxError, match="web is not created"):
        call(env, snapshots.save, "web", "x")
    env.run("up")
    with pytest.raises(VboxError, match="web has no snapshots"):
        call(env, snapshots.restore, "web", None)


def test_a_snapshot_taken_outside_vbox_restores_the_disk_and_keeps_the_record(world, tmp_path):
    env = Env(tmp_path, ENVFILE)
    env.run("up")
    call(env, snapshots.save, "web", "mine")
    env.project.update_state(lambda s: s["machines"]["web"].pop("snapshots"))
    before = env.project.machine_state("web")["provisioned"]
    call(env, snapshots.restore, "web", "mine")
    assert env.project.machine_state("web")["provisioned"] == before
    assert any("no record of the steps" in e.text for e in env.recorder.events if e.kind == "warning")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../x", "a b", "x" * 64, "-x", "é"])
def test_names_that_could_reach_a_path_or_xml_are_refused(name):
    with pytest.raises(VboxError, match="not a snapshot name"):
        check_snapshot_name(name)


@pytest.mark.parametrize("name", ["a", "before-upgrade", "20261123-141500", "v1.2_b", "x" * 63])
def test_names_that_are_taken(name):
    assert check_snapshot_name(name) == name
