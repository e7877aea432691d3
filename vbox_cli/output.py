"""Everything the CLI shows: rich on a terminal, plain lines elsewhere, JSON on request.

The core never prints; commands hand their results to an Output. rich is imported only
when a terminal will see it.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence


class Output:
    def __init__(self, plain: bool | None = None):
        self.plain = plain if plain is not None else not sys.stdout.isatty()
        self._console = None
        self._err_console = None

    # -- consoles --------------------------------------------------------------
    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False)
        return self._console

    @property
    def err_console(self):
        if self._err_console is None:
            from rich.console import Console

            self._err_console = Console(stderr=True, highlight=False)
        return self._err_console

    # -- messages --------------------------------------------------------------
    def line(self, text: str = "", style: str | None = None) -> None:
        if self.plain:
            print(text, flush=True)
        else:
            self.console.print(text, style=style, markup=False)

    def success(self, text: str) -> None:
        self.line(text, style="green")

    def error(self, text: str, hint: str | None = None) -> None:
        rich_err = not self.plain and sys.stderr.isatty()
        for prefix, body, style in (("error", text, "bold red"), ("hint", hint, "cyan")):
            if not body:
                continue
            if rich_err:
                self.err_console.print(f"{prefix}: {body}", style=style, markup=False)
            else:
                print(f"{prefix}: {body}", file=sys.stderr, flush=True)

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, sort_keys=False), flush=True)

    # -- tables ----------------------------------------------------------------
    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
        cells = [[str(c) for c in row] for row in rows]
        if self.plain:
            widths = [max([len(col), *(len(row[i]) for row in cells)]) for i, col in enumerate(columns)]
            if title:
                print(title)
            print("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths)).rstrip())
            for row in cells:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            sys.stdout.flush()
            return
        from rich.table import Table

        table = Table(title=title, title_justify="left", header_style="bold")
        for col in columns:
            table.add_column(col)
        for row in cells:
            table.add_row(*row)
        self.console.print(table)

    # -- progress --------------------------------------------------------------
    @contextmanager
    def progress(self, title: str) -> Iterator["Progress"]:
        """A task with phases; each phase is a line in plain mode, a spinner on a terminal."""
        if self.plain:
            yield _PlainProgress(title)
            return
        with self.console.status(title) as status:
            yield _RichProgress(title, status, self.console)


class Progress:
    def phase(self, text: str) -> None:
        """A new step of the task: always shown."""

    def detail(self, text: str) -> None:
        """A passing detail (a log line): shown on a terminal, dropped from plain output."""


class _PlainProgress(Progress):
    def __init__(self, title: str):
        self.title = title

    def phase(self, text: str) -> None:
        print(f"{self.title}: {text}", flush=True)


class _RichProgress(Progress):
    def __init__(self, title: str, status, console):
        self.title = title
        self.status = status
        self.console = console
        self.current = ""

    def phase(self, text: str) -> None:
        if self.current:
            from rich.markup import escape

            self.console.print(f"[green]✓[/green] {escape(self.current)}", highlight=False)
        self.current = text
        from rich.markup import escape

        self.status.update(f"{escape(self.title)}: {escape(text)}")

    def detail(self, text: str) -> None:
        from rich.markup import escape

        text = text.strip()
        if text:
            self.status.update(f"{escape(self.title)}: {escape(self.current)} [dim]{escape(text[:80])}[/dim]")


class MachineProgress:
    """Progress of several machines at once: a live table on a terminal, plain lines
    elsewhere. Thread-safe: machines report from their own threads."""

    def __init__(self, out: Output, names: Sequence[str]):
        import threading

        self.out = out
        self.names = list(names)
        self.phases = {name: "waiting" for name in names}
        self.lock = threading.Lock()
        self.live = None
        self.width = max([len(n) for n in names] + [1])

    def __enter__(self) -> "MachineProgress":
        if not self.out.plain:
            from rich.live import Live

            self.live = Live(self._render(), console=self.out.console, refresh_per_second=8, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def _render(self):
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        for name in self.names:
            phase = self.phases[name]
            done = phase in ("ready", "failed", "halted", "destroyed", "provisioned")
            mark = ("[red]✗[/red]" if phase == "failed" else "[green]✓[/green]") if done else Spinner("dots")
            table.add_row(mark, f"[bold]{name}[/bold]", phase)
        return table

    def phase(self, machine: str, text: str) -> None:
        with self.lock:
            self.phases[machine] = text
            if self.live is None:
                print(f"{machine}: {text}", flush=True)
            else:
                self.live.update(self._render())

    def output(self, machine: str, line: str) -> None:
        with self.lock:
            text = f"{machine.ljust(self.width)} | {line}"
            if self.live is None:
                print(text, flush=True)
            else:
                self.out.console.print(text, markup=False, highlight=False)

    def note(self, text: str) -> None:
        with self.lock:
            if self.live is None:
                print(text, flush=True)
            else:
                self.out.console.print(text, markup=False, highlight=False)
