"""Drift (vbox_cli/machines/drift.py) on the fake provider: `status` and `up` say how a
machine differs from its Envfile settings after an edit, and what applies it."""

from __future__ import annotations

from tests.unit.test_orchestration import Env, world  # noqa: F401 - the fixture
from vbox_cli import machines
from vbox_cli.envfile.load import load
from vbox_cli.machines.drift import drift

ENVFILE = """\
[defaults]
box = "debian-12"
memory = "512M"

[machines.web]
provision = [{ shell = "echo web" }]

[machines.db]
"""


def drifts(env: Env) -> dict[str, list[str]]:
    loaded = load(env.path)
    settings = {n: m.model_dump(mode="json", exclude={"name"}) for n, m in loaded.machines.items()}
    rows = machines.status(env.project, settings)
    return {r["name"]: r["drift"] for r in rows}


def test_status_and_up_say_what_changed_and_what_applies_it(world, tmp_path):  # noqa: F811
    env = Env(tmp_path / "proj", ENVFILE)
    assert drifts(env) == {"web": [], "db": []}  # nothing made yet: nothing to say
    env.run("up")
    assert drifts(env) == {"web": [], "db": []}
    env.path.write_text(ENVFILE.replace('memory = "512M"', 'memory = "1G"\ncpus = 2')
                        .replace('[{ shell = "echo web" }]', '[{ shell = "echo web" }, { shell = "echo new" }]'))
    found = drifts(env)
    assert found["db"] == ["reload needed (cpus 1 -> 2, memory 512M -> 1G): `env reload db`, or `env up` live where its provider can"]
    assert found["web"] == ["reload needed (cpus 1 -> 2, memory 512M -> 1G): `env reload web`, or `env up` live where "
                            "its provider can",
                            "provision needed (1 step not run): `env provision web`"]
    results = env.run("up")  # runs the new step, and warns of what only a reload applies
    warnings = [e.text for e in env.recorder.events if e.kind == "warning"]
    assert f"web: the Envfile changed: {found['web'][0]}" in warnings  # the fake provider has no live changes
    assert results["web"].action == "provisioned" and drifts(env)["web"] == [found["web"][0]]
    env.run("halt")
    env.run("up")  # a start applies them
    assert drifts(env) == {"web": [], "db": []}
    env.path.write_text(ENVFILE.replace('box = "debian-12"', 'box = "other"'))
    assert drifts(env)["db"][0] == "box debian-12 -> other: `env destroy db` and `env up db`"


def test_a_machine_made_by_an_earlier_vbox_has_no_record_of_what_it_applied():
    record = {"host_key": "k", "box": "debian-12", "provisioned": []}
    assert drift("m", {"box": "debian-12", "memory": 1024**3, "provision": []}, record) == []
