"""Everything the CLI shows: rich on a terminal, plain lines elsewhere, JSON on request.

The core never prints; commands hand their results to an Output. rich is imported only
when a terminal will see it.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence


class Output:
    def __init__(self, plain: bool | None = None):
        self.plain = plain if plain is not None else not sys.stdout.isatty()
        self.to_stderr = False  # with --events, stdout carries NDJSON only
        self._console = None
        self._err_console = None

    @property
    def _stdout(self):
        return sys.stderr if self.to_stderr else sys.stdout

    # -- consoles --------------------------------------------------------------
    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(highlight=False, stderr=self.to_stderr)
        return self._console

    @property
    def err_console(self):
        if self._err_console is None:
            from rich.console import Console

            self._err_console = Console(stderr=True, highlight=False)
        return self._err_console

    # -- messages --------------------------------------------------------------
    def line(self, text: str = "", style: str | None = None) -> None:
        if self.plain or self.to_stderr:
            print(text, file=self._stdout, flush=True)
        else:
            self.console.print(text, style=style, markup=False)

    def success(self, text: str) -> None:
        self.line(text, style="green")

    def error(self, text: str, hint: str | None = None, details: str | None = None, more: bool = False) -> None:
        """`error: TEXT`, its details indented (--verbose), then `hint: HINT`; `more`: there
        are details that --verbose would show."""
        rich_err = not self.plain and sys.stderr.isatty()
        if more:
            hint = f"{hint}; " if hint else ""
            hint += "--verbose shows the details"
        body_details = "\n".join(f"    {line}" for line in details.splitlines()) if details else None
        for prefix, body, style in (("error: ", text, "bold red"), ("", body_details, "dim"), ("hint: ", hint, "cyan")):
            if not body:
                continue
            if rich_err:
                self.err_console.print(f"{prefix}{body}", style=style, markup=False)
            else:
                print(f"{prefix}{body}", file=sys.stderr, flush=True)

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, sort_keys=False), file=self._stdout, flush=True)

    # -- tables ----------------------------------------------------------------
    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None,
              one_line: Sequence[str] = ()) -> None:
        """`one_line`: columns whose cells stay on one line, cut with "…" to fit the terminal."""
        cells = [[str(c) for c in row] for row in rows]
        if self.plain or self.to_stderr:
            stream = self._stdout
            widths = [max([len(col), *(len(row[i]) for row in cells)]) for i, col in enumerate(columns)]
            if title:
                print(title, file=stream)
            print("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths)).rstrip(), file=stream)
            for row in cells:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=stream)
            stream.flush()
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(title) if title else None, title_justify="left", header_style="bold")
        for i, col in enumerate(columns):
            # the one_line columns give way (cut with "…"); the others are kept whole
            whole = max([len(col), *(len(row[i]) for row in cells)]) if one_line and col not in one_line else None
            table.add_column(col, min_width=whole)
        for row in cells:
            table.add_row(*(Text(cell, no_wrap=True, overflow="ellipsis") if col in one_line else Text(cell)
                            for col, cell in zip(columns, row)))
        self.console.print(table)
