"""The per-machine runner shared by up, provision, halt and destroy."""

from __future__ import annotations

from types import SimpleNamespace

from vbox_cli.errors import VboxError
from vbox_cli.machines import Events, _parallel


def test_one_machine_failing_or_crashing_leaves_the_others_to_finish():
    phases = []
    session = SimpleNamespace(events=Events(phase=lambda machine, text: phases.append((machine, text))))

    def work(name: str) -> str:
        if name == "bad":
            raise VboxError("bad: step 2 failed")
        if name == "buggy":
            raise KeyError("address")
        return f"{name} done"

    results = {r.machine: r for r in _parallel(session, ["a", "bad", "buggy", "b"], work, jobs=2)}
    assert (results["a"].ok, results["a"].action) == (True, "a done")
    assert (results["b"].ok, results["b"].action) == (True, "b done")
    assert not results["bad"].ok and results["bad"].error.message == "bad: step 2 failed"
    assert not results["buggy"].ok and "internal error: KeyError" in results["buggy"].error.message
    assert sorted(phases) == [("bad", "failed"), ("buggy", "failed")]
    assert all(r.seconds >= 0 for r in results.values())
