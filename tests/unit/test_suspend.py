"""env suspend / resume on the fake provider: the machine stopped with its state kept,
status says suspended, resume (or up) brings it back without provisioning again; a
machine that does not run, or a provider that cannot, refused clearly."""

from __future__ import annotations

import pytest

from providers.base import RUNNING
from tests.unit.test_orchestration import Env, world  # noqa: F401 - the fixture
from vbox_cli import machines
from vbox_cli.machines.suspend import resume, suspend


def call(env, work, names):
    session = env.session()
    with session.project.lock():
        return {r.machine: r for r in work(session, names)}


def states(env):
    settings = {"web": {"provider": "lxc", "box": "debian-12"}, "db": {"provider": "lxc", "box": "debian-12"}}
    return {r["name"]: r["state"] for r in machines.status(env.project, settings)}


def test_suspend_then_resume_or_up(world, tmp_path):
    env = Env(tmp_path)
    env.run("up")
    steps = len(world.commands["web"])
    assert call(env, suspend, ["web"])["web"].action == "suspended"
    assert states(env) == {"web": "suspended", "db": "running"}
    assert call(env, suspend, ["web"])["web"].action == "suspended already"
    result = call(env, resume, ["web"])["web"]
    assert result.ok and result.action == "resumed"
    obj = env.project.object_name("web")
    assert world.machines[obj]["state"] == RUNNING and world.machines[obj]["resumed"]
    assert len(world.commands["web"]) == steps  # nothing provisioned again
    call(env, suspend, ["db"])
    assert env.run("up", "db")["db"].ok and world.machines[env.project.object_name("db")]["resumed"]


@pytest.mark.parametrize("first", ["never", "halted"])
def test_what_is_not_running_is_not_suspended(world, tmp_path, first):
    env = Env(tmp_path)
    env.run("up")
    if first == "halted":
        env.run("halt", "web")
        result = call(env, suspend, ["web"])["web"]
        assert not result.ok and "web is not running" in result.error.message
    result = call(env, resume, ["db"])["db"]
    assert result.ok and result.action == "running already"
    env.run("halt", "db")
    result = call(env, resume, ["db"])["db"]
    assert not result.ok and "db is not suspended" in result.error.message
