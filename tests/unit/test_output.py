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
