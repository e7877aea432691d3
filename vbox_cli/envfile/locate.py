"""Where each key and array item of a TOML document starts (line and column, 1-based).

tomllib parses but keeps no positions. This scanner walks a document that tomllib has
already accepted and records the start of every key path and array element, so that
a validation error on `machines.web.provision[1].to` can point at its line. It only
has to understand valid TOML; on anything surprising it stops and keeps what it found,
and `Positions.find` falls back to the nearest located parent.
"""

from __future__ import annotations

Path = tuple[str | int, ...]

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Positions:
    def __init__(self, text: str):
        self.text = text
        self.found: dict[Path, tuple[int, int]] = {}
        self._line_starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self._line_starts.append(i + 1)
        try:
            _Scanner(text, self).document()
        except (IndexError, ValueError):
            pass

    def line_col(self, offset: int) -> tuple[int, int]:
        lo, hi = 0, len(self._line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._line_starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, offset - self._line_starts[lo] + 1

    def record(self, path: Path, offset: int) -> None:
        self.found.setdefault(path, self.line_col(offset))

    def find(self, path: Path) -> tuple[int, int]:
        """Position of `path`, or of its nearest located parent, else line 1 column 1."""
        for end in range(len(path), 0, -1):
            if (pos := self.found.get(tuple(path[:end]))) is not None:
                return pos
        return (1, 1)

    def exact(self, path: Path) -> tuple[int, int] | None:
        return self.found.get(tuple(path))


class _Scanner:
    def __init__(self, text: str, positions: Positions):
        self.s = text
        self.i = 0
        self.pos = positions
        self.table: Path = ()
        self.array_tables: dict[Path, int] = {}

    # -- low level -------------------------------------------------------------
    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def skip_ws(self, newlines: bool = False) -> None:
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch in " \t" or (newlines and ch in "\r\n"):
                self.i += 1
            elif ch == "#" and newlines:
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
            else:
                return

    def skip_line(self) -> None:
        self.skip_ws()
        if self.peek() == "#":
            while self.i < len(self.s) and self.s[self.i] != "\n":
                self.i += 1

    # -- structure -------------------------------------------------------------
    def document(self) -> None:
        while True:
            self.skip_ws(newlines=True)
            if self.i >= len(self.s):
                return
            if self.peek(2) == "[[":
                start = self.i
                self.i += 2
                key = self.key()
                self.skip_ws()
                self.i += 2  # ]]
                index = self.array_tables.get(key, 0)
                self.array_tables[key] = index + 1
                self.pos.record(key, start)
                self.table = (*key, index)
                self.pos.record(self.table, start)
            elif self.peek() == "[":
                start = self.i
                self.i += 1
                key = self.key()
                self.skip_ws()
                self.i += 1  # ]
                for end in range(1, len(key) + 1):
                    self.pos.record(key[:end], start)
                self.table = key
            else:
                self.key_value(self.table)
            self.skip_line()

    def key(self) -> Path:
        parts: list[str] = []
        while True:
            self.skip_ws()
            ch = self.peek()
            if ch == '"':
                parts.append(self.basic_string())
            elif ch == "'":
                parts.append(self.literal_string())
            else:
                start = self.i
                while self.i < len(self.s) and self.s[self.i] in _BARE_KEY_CHARS:
                    self.i += 1
                if self.i == start:
                    raise ValueError("not a key")
                parts.append(self.s[start : self.i])
            self.skip_ws()
            if self.peek() != ".":
                return tuple(parts)
            self.i += 1

    def key_value(self, table: Path) -> None:
        self.skip_ws()
        start = self.i
        key = self.key()
        for end in range(1, len(key) + 1):
            self.pos.record((*table, *key[:end]), start)
        self.skip_ws()
        if self.peek() != "=":
            raise ValueError("expected =")
        self.i += 1
        self.skip_ws()
        self.value((*table, *key))

    def value(self, path: Path) -> None:
        ch = self.peek()
        if ch == "{":
            self.i += 1
            self.skip_ws()
            while self.peek() != "}":
                self.key_value(path)
                self.skip_ws()
                if self.peek() == ",":
                    self.i += 1
                    self.skip_ws()
            self.i += 1
        elif ch == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() == "]":
                    self.i += 1
                    return
                self.pos.record((*path, index), self.i)
                self.value((*path, index))
                index += 1
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.i += 1
        elif self.peek(3) in ('"""', "'''"):
            quote = self.peek(3)
            end = self.s.index(quote, self.i + 3)
            if quote == '"""':
                while self._escaped(end):
                    end = self.s.index(quote, end + 1)
            self.i = end + 3
            while self.peek() == quote[0]:  # up to two quotes may close the string
                self.i += 1
        elif ch == '"':
            self.basic_string()
        elif ch == "'":
            self.literal_string()
        else:
            while self.i < len(self.s) and self.s[self.i] not in ",]}\n#":
                self.i += 1

    def _escaped(self, quote_at: int) -> bool:
        backslashes = 0
        j = quote_at - 1
        while j >= 0 and self.s[j] == "\\":
            backslashes += 1
            j -= 1
        return backslashes % 2 == 1

    def basic_string(self) -> str:
        start = self.i + 1
        end = self.s.index('"', start)
        while self._escaped(end):
            end = self.s.index('"', end + 1)
        self.i = end + 1
        raw = self.s[start:end]
        if "\\" not in raw:
            return raw
        import tomllib

        return tomllib.loads(f'k = "{raw}"')["k"]

    def literal_string(self) -> str:
        start = self.i + 1
        end = self.s.index("'", start)
        self.i = end + 1
        return self.s[start:end]
