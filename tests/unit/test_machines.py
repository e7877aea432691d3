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


def _rpc_error(message: str):
    """libvirt's error for a connection that broke (what a restarted libvirtd gives)."""
    import libvirt

    error = libvirt.libvirtError(message)
    error.err = (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, message, 2, None, None, None, -1, -1)
    return error


def test_a_machine_whose_libvirt_connection_broke_is_done_again_once_connected():
    recorder = Recorder()
    session = SimpleNamespace(events=EventStream([recorder]))
    tries: dict[str, int] = {}

    def work(name: str) -> str:
        tries[name] = tries.get(name, 0) + 1
        if name == "vm" and tries[name] == 1:
            try:
                raise _rpc_error("End of file while reading data: Input/output error")
            except Exception:
                raise VboxError("libvirt could not start vm") from None  # a provider's words, libvirt's cause
        if name == "gone":
            raise _rpc_error("Cannot write data: Broken pipe")
        return "started"

    results = {r.machine: r for r in run_each(session, ["vm", "gone"], work)}
    assert (results["vm"].ok, results["vm"].action, tries["vm"]) == (True, "started", 2)
    notes = [e.text for e in recorder.events if e.kind == "note"]
    assert "vm: the connection to libvirt broke (End of file while reading data: Input/output error): " \
           "connecting again" in notes
    # broken again on the second try: the user's error, said so, not vbox's bug
    assert not results["gone"].ok and tries["gone"] == 2
    assert results["gone"].error.message == \
        "gone: the connection to libvirt broke (libvirtd stopped or restarted): Cannot write data: Broken pipe"
    assert "run the command again" in results["gone"].error.hint


def test_only_a_broken_connection_counts_as_one():
    import libvirt

    from providers.hosts import find, lost_connection

    conn = libvirt.open("test:///default")
    try:
        assert find(conn.lookupByName, "no-such-domain") is None
        assert find(conn.lookupByName, "test").name() == "test"
        assert find(conn.networkLookupByName, "no-such-network") is None
        try:
            conn.lookupByName("no-such-domain")
        except libvirt.libvirtError as exc:
            assert lost_connection(exc) is None  # "not found" is an answer
    finally:
        conn.close()
    assert lost_connection(_rpc_error("Broken pipe")) == "Broken pipe"
    # a stream of it that broke: libvirt's words, without its "internal error" (not vbox's)
    assert lost_connection(_rpc_error("internal error: client socket is closed")) == "client socket is closed"
    assert lost_connection(OSError("Broken pipe")) is None


def test_find_raises_what_is_not_an_answer():
    """A lookup that failed for another reason than "no such object" is not taken for
    "not there" (up would make anew a machine that exists)."""
    import pytest

    from providers.hosts import find

    def broken(name):
        raise _rpc_error("End of file while reading data")

    with pytest.raises(Exception, match="End of file"):
        find(broken, "vbox-p-web")
