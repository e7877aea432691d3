"""Envfile.lock (vbox_cli/lockfile.py) on the fake provider: written by the first up of
every machine, checked by `up --locked` before anything is made (a changed script, a box
with another digest, an added or removed machine: each refused, named, nothing made),
and read back exactly as written."""

from __future__ import annotations

import pytest

from boxes.store import BoxStore
from tests.unit.test_orchestration import Env, world  # noqa: F401 - the fixture
from vbox_cli import lockfile, machines

ENVFILE = """\
[defaults]
box = "debian-12"

[machines.web]
provision = [{ shell = "echo web" }, { script = "scripts/db.sh", args = ["--init"] }]

[machines.db]
"""


def up(env: Env, locked: bool = False):
    session = env.session()
    with session.project.lock():
        return {r.machine: r for r in machines.up(session, [], locked=locked)}


def test_the_first_up_writes_the_lock_and_locked_up_checks_it(world, tmp_path):  # noqa: F811
    env = Env(tmp_path / "proj", ENVFILE)
    lock_path = env.path.with_name("Envfile.lock")
    with pytest.raises(lockfile.LockError, match="there is none"):
        up(env, locked=True)
    assert world.machines == {}
    up(env)
    lock = lockfile.read(lock_path)
    assert list(lock["machines"]) == ["web", "db"]  # Envfile order
    assert lock["machines"]["web"]["box_version"] == "12.0.6" and lock["machines"]["db"]["steps"] == []
    assert [s.split()[0] for s in lock["machines"]["web"]["steps"]] == ["shell", "script"]
    text = lock_path.read_text()
    assert lockfile.render(lock) == text  # read back exactly as written
    up(env, locked=True)  # the same project: fine, and the lock is not rewritten
    assert lock_path.read_text() == text


def refused(env: Env, world) -> list[str]:  # noqa: F811
    made = dict(world.machines)
    with pytest.raises(lockfile.LockError) as info:
        up(env, locked=True)
    assert world.machines == made  # nothing made or changed
    return info.value.hint.splitlines()


def test_locked_up_refuses_each_difference_and_makes_nothing(world, tmp_path):  # noqa: F811
    env = Env(tmp_path / "proj", ENVFILE)
    lock_path = env.path.with_name("Envfile.lock")
    session = env.session()
    lockfile.write(lock_path, lockfile.compute(session.loaded, {n: BoxStore().get("debian-12") for n in
                                                                ("web", "db")}, ["web", "db"]))
    # a script the step reads changed
    (env.path.parent / "scripts" / "db.sh").write_text("#!/bin/sh\necho changed\n")
    assert refused(env, world)[0] == "web: step 2 (script) changed (its settings or a file it reads)"
    lockfile.write(lock_path, lockfile.compute(env.session().loaded, {n: BoxStore().get("debian-12") for n in
                                                                      ("web", "db")}, ["web", "db"]))
    # a box built again: same version, another digest
    lock = lockfile.read(lock_path)
    lock["machines"]["db"]["box_digest"] = "sha256:" + "9" * 64
    lockfile.write(lock_path, lock)
    assert "db: box debian-12 12.0.6 is sha256:000000000000, the lock has sha256:999999999999" in \
        refused(env, world)[0]
    lock["machines"]["db"]["box_digest"] = BoxStore().get("debian-12").digest
    lockfile.write(lock_path, lock)
    # a machine added, a machine removed, a step added
    env.path.write_text(ENVFILE.replace("[machines.db]\n", '[machines.cache]\nprovision = [{ shell = "x" }]\n'))
    hint = refused(env, world)
    assert "cache: a machine the lock does not have" in hint and "db: in the lock, not in the Envfile" in hint
    # with the change wanted, `lock` writes it anew and --locked passes
    lockfile.write(lock_path, lockfile.compute(env.session().loaded, {n: BoxStore().get("debian-12") for n in
                                                                      ("web", "cache")}, ["web", "cache"]))
    results = up(env, locked=True)
    assert all(r.ok for r in results.values())


def test_locked_takes_the_locked_version_not_the_newest(world, tmp_path):  # noqa: F811
    env = Env(tmp_path / "proj", ENVFILE)
    up(env)
    store = BoxStore(tmp_path / "home" / "boxes")
    store.install(store.staging("debian-12"), "debian-12", "12.0.7", {"digest": "sha256:" + "7" * 64,
                                                                       "user": "vbox", "built": "9"})
    env.path.write_text(ENVFILE + "[machines.new]\n")
    lock = lockfile.read(env.path.with_name("Envfile.lock"))
    lock["machines"]["new"] = dict(lock["machines"]["db"])
    lockfile.write(env.path.with_name("Envfile.lock"), lock)
    results = up(env, locked=True)
    assert results["new"].ok
    assert env.project.machine_state("new")["box_version"] == "12.0.6"  # the lock's, not 12.0.7


def test_a_box_version_the_lock_no_longer_satisfies(world, tmp_path):  # noqa: F811
    env = Env(tmp_path / "proj", ENVFILE)
    up(env)
    env.path.write_text(ENVFILE.replace('box = "debian-12"', 'box = "debian-12"\nbox_version = ">= 13"'))
    hint = refused(env, world)
    assert "web: box_version '>= 13' does not allow the lock's 12.0.6" in hint
