"""One typed event stream for every verb that changes machines or builds a box.

The core emits events; it never prints. Three sinks read the same stream: a live view
on a terminal, plain lines elsewhere, and NDJSON (`--events`, schema in docs/events.md).
Phase names come from a closed set (`Phase`); free text goes in `detail`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import IO, Protocol, Sequence

SCHEMA_VERSION = 1


class Phase(str, Enum):
    # machines
    QUEUED = "queued"
    CREATING = "creating"
    STARTING = "starting"
    DOWNLOADING = "downloading"  # its box, from box_url (detail: bytes so far, in all, rate)
    CONNECTING = "connecting"  # waiting for SSH to answer with the expected host key
    PROVISIONING = "provisioning"
    READY = "ready"
    HALTING = "halting"
    HALTED = "halted"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    SNAPSHOTTING = "snapshotting"  # env snapshot save (detail: the snapshot's name)
    SAVED = "saved"
    RESTORING = "restoring"  # env snapshot restore
    RESTORED = "restored"  # of a stopped machine (a running one ends `ready`, started again)
    DELETING = "deleting"  # env snapshot delete
    DELETED = "deleted"
    SUSPENDING = "suspending"  # env suspend: memory and processes to disk
    SUSPENDED = "suspended"
    MIGRATING = "migrating"  # env migrate (detail: the target host, live or cold, and bytes sent)
    MIGRATED = "migrated"  # a stopped machine moved (a running one ends `ready`, at its new address)
    FAILED = "failed"
    # boxes
    WAITING = "waiting"  # for another command holding the same lock
    BOOTSTRAPPING = "bootstrapping"
    CONFIGURING = "configuring"
    KERNEL = "kernel"
    DISK = "disk"
    DIGEST = "digest"
    INSTALLING = "installing"
    BUILT = "built"
    EXPORTING = "exporting"  # env box export: bytes written so far
    EXPORTED = "exported"
    IMPORTING = "importing"  # env box import: bytes unpacked so far
    VERIFYING = "verifying"
    IMPORTED = "imported"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = {Phase.READY, Phase.HALTED, Phase.DESTROYED, Phase.SAVED, Phase.RESTORED, Phase.DELETED, Phase.SUSPENDED,
          Phase.MIGRATED, Phase.FAILED, Phase.BUILT, Phase.EXPORTED, Phase.IMPORTED}


@dataclass(frozen=True)
class Event:
    kind: str  # phase | output | note | warning | machine_result | result
    subject: str | None = None  # the machine (or box) it is about; None: the whole command
    phase: Phase | None = None
    text: str = ""  # a phase's detail, an output line, a note's or warning's text
    ok: bool | None = None
    action: str = ""  # a machine result: what was done
    seconds: float | None = None
    error: str | None = None
    hint: str | None = None
    exit_code: int | None = None
    ts: float = field(default_factory=time.time)


class Sink(Protocol):
    def handle(self, event: Event) -> None: ...


class EventStream:
    """What the core reports to. Thread-safe: machines report from their own threads."""

    def __init__(self, sinks: Sequence[Sink] = ()):
        self.sinks = list(sinks)
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            for sink in self.sinks:
                sink.handle(event)

    def phase(self, subject: str, phase: Phase, detail: str = "") -> None:
        self.emit(Event("phase", subject, phase=phase, text=detail))

    def output(self, subject: str, line: str) -> None:
        self.emit(Event("output", subject, text=line))

    def note(self, text: str, subject: str | None = None) -> None:
        self.emit(Event("note", subject, text=text))

    def warning(self, text: str, subject: str | None = None) -> None:
        self.emit(Event("warning", subject, text=text))

    def machine_result(self, subject: str, ok: bool, action: str, seconds: float,
                       error: str | None = None, hint: str | None = None) -> None:
        self.emit(Event("machine_result", subject, ok=ok, action=action, seconds=round(seconds, 3),
                        error=error, hint=hint))

    def result(self, exit_code: int, error: str | None = None, hint: str | None = None) -> None:
        self.emit(Event("result", None, ok=exit_code == 0, exit_code=exit_code, error=error, hint=hint))


def _fit(text: str, room: int) -> str:
    return text if len(text) <= room else text[:max(room - 1, 0)] + "…"


def label(phase: Phase, detail: str = "") -> str:
    """How a person reads a phase: its name, then its detail."""
    text = phase.value.replace("_", " ")
    return f"{text}: {detail}" if detail else text


# -- sinks ---------------------------------------------------------------------------


def byte_progress(done: int, total: int, seconds: float) -> str:
    """"120.0 of 251.4 MiB, 80.2 MiB/s, 2 s left": a copy's progress as a phase's detail."""
    rate = done / max(seconds, 1e-6)
    text = f"{done / 2**20:.1f} of {total / 2**20:.1f} MiB, {rate / 2**20:.1f} MiB/s"
    if total and done < total and rate > 0:
        left = (total - done) / rate
        text += f", {int(left // 60)} min {int(left % 60)} s left" if left >= 60 else f", {left:.0f} s left"
    return text


class PhaseClock:
    """How long each machine spent in each phase, read from the stream (for the summary)."""

    def __init__(self):
        self.current: dict[str, tuple[Phase, float]] = {}
        self.spent: dict[str, list[tuple[Phase, float]]] = {}
        self.ready: dict[str, str] = {}  # machine -> the detail of its `ready` phase (its address)

    def handle(self, event: Event) -> None:
        if event.kind != "phase" or event.subject is None:
            return
        subject = event.subject
        if subject in self.current:
            phase, started = self.current.pop(subject)
            spent = self.spent.setdefault(subject, [])
            earlier = next((i for i, (p, _) in enumerate(spent) if p == phase), None)
            if earlier is not None:  # provisioning 1/3, snapshotting, 2/3, ...: each phase once, added up
                spent[earlier] = (phase, spent[earlier][1] + event.ts - started)
            else:
                spent.append((phase, event.ts - started))
        if event.phase == Phase.READY and event.text:
            self.ready[subject] = event.text
        if not event.phase.final:
            self.current[subject] = (event.phase, event.ts)

    def summary(self, subject: str) -> str:
        return ", ".join(f"{phase.value} {seconds:.1f} s" for phase, seconds in self.spent.get(subject, []))


class NdjsonSink:
    """One JSON object per line (docs/events.md), flushed at once, for CI."""

    def __init__(self, command: str, subject_key: str = "machine", stream: IO[str] | None = None):
        self.command = command
        self.subject_key = subject_key
        self.stream = stream or sys.stdout

    def handle(self, event: Event) -> None:
        record: dict = {"v": SCHEMA_VERSION, "ts": round(event.ts, 3), "command": self.command,
                        "event": event.kind}
        if event.subject is not None:
            record[self.subject_key] = event.subject
        if event.kind == "phase":
            record["phase"] = event.phase.value
            if event.text:
                record["detail"] = event.text
        elif event.kind == "output":
            record["line"] = event.text
        elif event.kind in ("note", "warning"):
            record["text"] = event.text
        elif event.kind == "machine_result":
            record.update(ok=event.ok, action=event.action, seconds=event.seconds)
            if event.error:
                record.update(error=event.error, hint=event.hint)
        elif event.kind == "result":
            record.update(ok=event.ok, exit_code=event.exit_code)
            if event.error:
                record.update(error=event.error, hint=event.hint)
        try:
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            pass


class PlainSink:
    """Plain lines: `web: creating: from debian-12 12.0.6`, step output prefixed with the
    machine's name. `show_output=False` drops output lines (a box build's debootstrap)."""

    def __init__(self, names: Sequence[str] = (), show_output: bool = True, stream: IO[str] | None = None):
        self.width = max([len(n) for n in names] + [1])
        self.show_output = show_output
        self.stream = stream

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def handle(self, event: Event) -> None:
        if event.kind == "phase":
            self._print(f"{event.subject}: {label(event.phase, event.text)}")
        elif event.kind == "output" and self.show_output:
            self._print(f"{(event.subject or '').ljust(self.width)} | {event.text}")
        elif event.kind == "note":
            self._print(event.text)
        elif event.kind == "warning":
            self._print(f"warning: {event.text}")


class LiveSink:
    """A live table on a terminal: per machine (or box), a spinner (or its final mark) and
    its phase. Notes, and output lines with `show_output`, are printed above it; without
    it, the last output line is shown dimmed in the row. Gone when the command ends (the
    summary follows)."""

    def __init__(self, console, names: Sequence[str], show_output: bool = True):
        self.console = console
        self.names = list(names)
        self.show_output = show_output
        self.phases: dict[str, tuple[Phase, str]] = {n: (Phase.QUEUED, "") for n in self.names}
        self.since: dict[str, float] = {}  # when the current phase began
        self.last: dict[str, str] = {}
        self.width = max([len(n) for n in self.names] + [1])
        self.live = None

    def __enter__(self) -> "LiveSink":
        from rich.live import Live

        # the sink itself is what Live draws (__rich__): elapsed times move at each refresh
        self.live = Live(self, console=self.console, refresh_per_second=8, transient=True)
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None

    def __rich__(self):
        return self._render()

    def _render(self):
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        # Text objects, not markup strings: what a step printed is never read as markup
        table = Table.grid(padding=(0, 1))
        room = max(20, self.console.width - self.width - 4)  # one line per machine, whatever the width
        for name in self.names:
            phase, detail = self.phases[name]
            if phase.final:
                mark = Text("✗", style="red") if phase == Phase.FAILED else Text("✓", style="green")
            else:
                mark = Spinner("dots")
            clock = f" {time.time() - self.since[name]:.0f}s" if not phase.final and name in self.since else ""
            text = _fit(label(phase, detail), room - len(clock))
            line = Text(text)
            line.append(clock, style="cyan")
            last = self.last.get(name) if not phase.final else None
            if last and room - len(text) - len(clock) > 8:
                line.append(" " + _fit(last, room - len(text) - len(clock) - 1), style="dim")
            table.add_row(mark, Text(name, style="bold"), line)
        return table

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.refresh()  # Live draws this sink (__rich__): the table is made anew

    def handle(self, event: Event) -> None:
        if event.kind == "phase":
            if event.subject not in self.phases:
                self.names.append(event.subject)
            self.phases[event.subject] = (event.phase, event.text)
            self.since[event.subject] = event.ts
            self.last.pop(event.subject, None)
            self._refresh()
        elif event.kind == "output" and self.show_output:
            self.console.print(f"{(event.subject or '').ljust(self.width)} | {event.text}", markup=False,
                               highlight=False)
        elif event.kind == "output" and event.text.strip():
            self.last[event.subject] = event.text.strip()
            self._refresh()
        elif event.kind == "note":
            self.console.print(event.text, markup=False, highlight=False)
        elif event.kind == "warning":
            self.console.print(f"warning: {event.text}", style="yellow", markup=False, highlight=False)
