"""A container that a killed vbox left frozen for a snapshot is thawed by the next
command, after the lxc-freeze that vbox started has ended (else that lxc-freeze freezes it
again after the thaw, for good)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from providers import lxc, lxc_freeze
from providers.lxc import CONFIG, LxcProvider
from providers.lxc_freeze import FROZEN_MARK


def test_the_thaw_waits_for_the_lxc_freeze_a_killed_vbox_left(tmp_path, monkeypatch):
    provider = LxcProvider(tmp_path)
    folder = provider.folder("vbox-p-web")
    folder.mkdir()
    (folder / CONFIG).write_text("")
    (folder / FROZEN_MARK).touch()
    freeze = [b"lxc-freeze", b"-P", str(tmp_path).encode(), b"-n", b"vbox-p-web", b""]
    other = [b"lxc-freeze", b"-P", str(tmp_path).encode(), b"-n", b"vbox-p-webserver", b""]
    polls, events = [], []

    def processes():
        polls.append(1)
        events.append("poll")
        running = [(10, other)]  # another container's freeze is not waited for
        if len(polls) <= 3:
            running.append((11, freeze))
        return iter(running)

    monkeypatch.setattr(lxc_freeze.proc, "processes", processes)
    monkeypatch.setattr(lxc_freeze.time, "sleep", lambda s: None)
    monkeypatch.setattr(provider, "tool", lambda *a, **k: subprocess.CompletedProcess(a, 0, "FROZEN\n", ""))
    monkeypatch.setattr(lxc_freeze, "thaw", lambda machines, name: events.append(f"thaw {name}"))
    assert provider.state("vbox-p-web") == lxc.RUNNING
    assert events == ["poll"] * 4 + ["thaw vbox-p-web"]


def test_no_mark_no_thaw(tmp_path, monkeypatch):
    provider = LxcProvider(tmp_path)
    folder = provider.folder("vbox-p-web")
    folder.mkdir()
    (folder / CONFIG).write_text("")
    monkeypatch.setattr(provider, "tool", lambda *a, **k: subprocess.CompletedProcess(a, 0, "RUNNING\n", ""))
    monkeypatch.setattr(lxc_freeze, "thaw_left_frozen",
                        lambda machines, name: (_ for _ in ()).throw(AssertionError(name)))
    assert provider.state("vbox-p-web") == lxc.RUNNING
    assert not Path(folder / FROZEN_MARK).exists()
