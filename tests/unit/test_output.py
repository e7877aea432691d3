"""What a person sees on a terminal: cells are text, never rich markup."""

from __future__ import annotations

import io

from rich.console import Console

from vbox_cli.output import Output


def test_a_cell_that_looks_like_markup_is_shown_as_it_is():
    out = Output(plain=False)
    buffer = io.StringIO()
    out._console = Console(file=buffer, force_terminal=True, width=80, color_system=None)
    out.table(["machine", "state"], [("web", "unknown: [/x] [bold]no[/bold]")], title="project [red]p")
    shown = buffer.getvalue()
    assert "[/x] [bold]no[/bold]" in shown and "project [red]p" in shown


def test_the_live_view_shows_how_long_the_current_phase_has_run():
    import time

    from vbox_cli.events import Event, LiveSink, Phase

    console = Console(file=io.StringIO(), force_terminal=True, width=80, color_system=None)
    live = LiveSink(console, ["web", "db"])
    live.handle(Event("phase", "web", phase=Phase.PROVISIONING, text="2/3: shell: make", ts=time.time() - 7))
    live.handle(Event("phase", "db", phase=Phase.READY, text="10.1.2.3"))
    console.print(live)
    screen = console.file.getvalue()
    assert "web provisioning: 2/3: shell: make 7s" in screen
    db = next(line for line in screen.splitlines() if " db " in line)
    assert db.rstrip().endswith("ready: 10.1.2.3")  # a finished phase has no clock
