"""Incremental re-provisioning on the fake provider (whose "disk" is what ran in the
machine): a changed step sends the machine back to the snapshot before it and the steps
run from there; a changed file a step reads counts; removed, appended and always steps;
--from, --in-place, `env restore`; machines without snapshots or without a chain."""

from __future__ import annotations

import pytest

import providers.registry as registry
from providers.registry import ProviderInfo
from tests.unit.test_orchestration import Env, world  # noqa: F401 - the fixture
from vbox_cli.errors import VboxError
from vbox_cli.machines import incremental

FOUR = """\
[machines.web]
provision = [{ shell = "echo s1" }, { shell = "echo s2" }, { shell = "echo s3" }, { shell = "echo s4" }]
"""


def disk(world, machine="web") -> list[str]:
    """The steps whose effect the machine's disk holds, in order."""
    return [c.split(": ", 1)[1].strip().splitlines()[-1] for c in world.commands.get(machine, [])
            if c.startswith("upload")]


def saves(world) -> int:
    return sum(1 for op, _ in world.calls if op == "snapshot_save")


def test_editing_step_3_of_4_reruns_3_and_4_from_the_state_after_step_2(world, tmp_path):
    env = Env(tmp_path, FOUR)
    env.run("up")
    assert disk(world) == ["echo s1", "echo s2", "echo s3", "echo s4"]
    assert saves(world) == 5  # before the first step, and after each
    env.path.write_text(FOUR.replace('"echo s3"', '"echo s3-new"'))
    result = env.run("provision", "web", force=False)["web"]
    assert result.ok and result.action == "back to after step 2, provisioned (2 steps)"
    assert disk(world) == ["echo s1", "echo s2", "echo s3-new", "echo s4"]  # the old step 3's work is gone
    assert [c for c, _ in world.calls if c in ("halt", "snapshot_restore", "start")][-3:] == \
        ["halt", "snapshot_restore", "start"]
    # once more: nothing changed, nothing to do
    assert env.run("provision", "web", force=False)["web"].action.startswith("nothing to do")
    # up does the same for a changed step
    env.path.write_text(FOUR.replace('"echo s3"', '"echo s3-new"').replace('"echo s2"', '"echo s2-new"'))
    assert env.run("up")["web"].action == "back to after step 1, started, provisioned"
    assert disk(world) == ["echo s1", "echo s2-new", "echo s3-new", "echo s4"]


def test_a_changed_file_that_a_step_reads_is_a_changed_step(world, tmp_path):
    env = Env(tmp_path, '[machines.web]\nprovision = [{ shell = "echo a" }, { script = "scripts/db.sh" }, '
                        '{ shell = "echo c" }]\n')
    env.run("up")
    (tmp_path / "scripts" / "db.sh").write_text("#!/bin/sh\necho db version 2\n")
    assert env.run("provision", "web", force=False)["web"].action == "back to after step 1, provisioned (2 steps)"
    assert disk(world)[1:] == ["echo db version 2", "echo c"]


def test_appended_steps_run_on_top_and_removed_steps_go(world, tmp_path):
    env = Env(tmp_path, FOUR)
    env.run("up")
    world.calls.clear()
    env.path.write_text(FOUR.replace('"echo s4" }', '"echo s4" }, { shell = "echo s5" }'))
    assert env.run("provision", "web", force=False)["web"].action == "provisioned (1 step)"
    assert "snapshot_restore" not in [c for c, _ in world.calls]
    assert disk(world)[-1] == "echo s5"
    env.path.write_text(FOUR.replace(', { shell = "echo s4" }', ""))
    assert env.run("provision", "web", force=False)["web"].action == "back to after step 3, provisioned (0 steps)"
    assert disk(world) == ["echo s1", "echo s2", "echo s3"]
    names = [s.name for s in env.session().provider("web").snapshots(env.project.object_name("web"))]
    assert names == [f"vbox-step-{i}" for i in range(4)]  # those past the last step went


def test_always_steps_run_every_time_without_new_snapshots(world, tmp_path):
    env = Env(tmp_path, '[machines.web]\nprovision = [{ shell = "echo once" }, '
                        '{ shell = "echo every", run = "always" }]\n')
    env.run("up")
    before = saves(world)
    env.run("provision", "web", force=False)
    env.run("provision", "web", force=False)
    assert disk(world) == ["echo once", "echo every", "echo every", "echo every"]
    assert saves(world) == before


def test_from_n_goes_back_before_step_n(world, tmp_path):
    env = Env(tmp_path, FOUR)
    env.run("up")
    world.commands["web"].append("upload /x: drift")  # something done by hand since
    result = env.run("provision", "web", force=False, from_step=2)["web"]
    assert result.action == "back to after step 1, provisioned (3 steps)"
    assert disk(world) == ["echo s1", "echo s2", "echo s3", "echo s4"]
    with pytest.raises(VboxError, match="it has 4 steps"):
        incremental.plan(env.session(), "web", env.session().machines["web"].provision, from_step=5)


def test_in_place_runs_a_changed_step_on_top(world, tmp_path):
    env = Env(tmp_path, FOUR)
    env.run("up")
    env.path.write_text(FOUR.replace('"echo s3"', '"echo s3-new"'))
    assert env.run("provision", "web", force=False, in_place=True)["web"].action == "provisioned (1 step)"
    assert disk(world) == ["echo s1", "echo s2", "echo s3", "echo s4", "echo s3-new"]
    assert env.run("provision", "web", force=False)["web"].action.startswith("nothing to do")
    with pytest.raises(VboxError, match="no snapshot of it after step 3"):  # the one after 3 is of the old step
        incremental.plan(env.session(), "web", env.session().machines["web"].provision, from_step=4)


def test_env_restore_returns_to_the_last_complete_provisioning(world, tmp_path):
    env = Env(tmp_path, FOUR)
    env.run("up")
    world.commands["web"].append("upload /x: drift")
    session = env.session()
    with session.project.lock():
        assert incremental.restore(session, "web") == "restored vbox-step-4, started"
    assert disk(world) == ["echo s1", "echo s2", "echo s3", "echo s4"]


def test_a_machine_of_an_earlier_vbox_runs_changed_steps_on_top(world, tmp_path):
    env = Env(tmp_path, FOUR)
    env.run("up")
    env.project.update_state(lambda s: s["machines"]["web"].pop("chain"))  # as an earlier vbox left it
    env.path.write_text(FOUR.replace('"echo s3"', '"echo s3-new"'))
    assert env.run("provision", "web", force=False)["web"].action == "provisioned (1 step)"
    assert disk(world)[-1] == "echo s3-new"


def test_a_machine_whose_provider_keeps_no_snapshots_runs_changed_steps_on_top(world, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "REGISTRY", {"lxc": ProviderInfo(
        "lxc", "tests.unit.fake_provider:NoSnapshotsProvider", "fake machine")})
    monkeypatch.setattr(registry, "_instances", {})
    env = Env(tmp_path, FOUR)
    env.run("up")
    assert saves(world) == 0
    env.path.write_text(FOUR.replace('"echo s3"', '"echo s3-new"'))
    assert env.run("provision", "web", force=False)["web"].action == "provisioned (1 step)"
    with pytest.raises(VboxError, match="--from needs snapshots, which a fake machine does not have: it keeps none"):
        incremental.plan(env.session(), "web", env.session().machines["web"].provision, from_step=1)
