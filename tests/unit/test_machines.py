"""The per-machine runner shared by up, provision, halt and destroy."""

from __future__ import annotations

from types import SimpleNamespace

from vbox_cli.errors import VboxError
from vbox_cli.events import Event, EventStream
from vbox_cli.machines.runner import run_each


class Recorder:
    def __init__(self):
        self.events: list[Event] = []

    def handle(self, event: Event) -> None:
        self.events.append(event)


def test_one_machine_failing_or_crashing_leaves_the_others_to_finish():
    recorder = Recorder()
    session = SimpleNamespace(events=EventStream([recorder]))

    def work(name: str) -> str:
        if name == "bad":
            raise VboxError("bad: step 2 failed")
        if name == "buggy":
            raise KeyError("address")
        return f"{name} done"

    results = {r.machine: r for r in run_each(session, ["a", "bad", "buggy", "b"], work, jobs=2)}
    assert (results["a"].ok, results["a"].action) == (True, "a done")
    assert (results["b"].ok, results["b"].action) == (True, "b done")
    assert not results["bad"].ok and results["bad"].error.message == "bad: step 2 failed"
    assert not results["buggy"].ok and "internal error: KeyError" in results["buggy"].error.message
    failed = sorted(e.subject for e in recorder.events if e.kind == "phase" and e.phase.value == "failed")
    assert failed == ["bad", "buggy"]
    outcome = {e.subject: e.ok for e in recorder.events if e.kind == "machine_result"}
    assert outcome == {"a": True, "bad": False, "buggy": False, "b": True}
    assert all(r.seconds >= 0 for r in results.values())
