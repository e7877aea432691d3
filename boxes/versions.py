"""Box versions and version constraints, as Vagrant writes them.

A version is dotted numbers ("12.0.9"); a constraint is a comma-separated list of
`OP VERSION` with OP one of =, !=, >, <, >=, <= and ~> (pessimistic: "~> 12.1" is
">= 12.1, < 13", "~> 12.1.3" is ">= 12.1.3, < 12.2"); a bare version means "=".
"""

from __future__ import annotations

import re

_VERSION = re.compile(r"\d+(\.\d+){0,5}")
_TERM = re.compile(r"\s*(~>|>=|<=|!=|=|>|<)?\s*(\S+)\s*")


def parse(version: str) -> tuple[int, ...]:
    if not _VERSION.fullmatch(version.strip()):
        raise ValueError(f"{version!r} is not a version: dotted numbers, like 12.0.9")
    return tuple(int(part) for part in version.strip().split("."))


def _padded(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def sort_key(version) -> tuple:
    """Orders versions as Vagrant does; what is not a version sorts before every one."""
    try:
        return (1, *parse(version), *(0,) * (6 - len(parse(version))))
    except (ValueError, AttributeError, TypeError):
        return (0,)


class Constraint:
    """A parsed constraint; `Constraint("")` allows every version."""

    def __init__(self, text: str):
        self.text = text.strip()
        self.terms: list[tuple[str, tuple[int, ...]]] = []
        for piece in filter(None, (p.strip() for p in self.text.split(","))) if self.text else ():
            match = _TERM.fullmatch(piece)
            if not match:
                raise ValueError(f"{piece!r} is not a version constraint, like \">= 12.1, < 13\" or \"~> 12.0\"")
            op, version = match[1] or "=", parse(match[2])
            if op == "~>":
                if len(version) < 2:
                    raise ValueError(f"~> needs two parts or more: \"~> {version[0]}.0\"")
                upper = version[:-2] + (version[-2] + 1,)
                self.terms += [(">=", version), ("<", upper)]
            else:
                self.terms.append((op, version))

    def allows(self, version: str) -> bool:
        if not self.terms:
            return True  # no constraint: any version, a version or not
        try:
            value = parse(version)
        except ValueError:
            return False
        for op, bound in self.terms:
            x, y = _padded(value, bound)
            if not {"=": x == y, "!=": x != y, ">": x > y, "<": x < y, ">=": x >= y, "<=": x <= y}[op]:
                return False
        return True

    def newest(self, versions) -> str | None:
        allowed = [v for v in versions if self.allows(v)]
        return max(allowed, key=sort_key) if allowed else None

    def __str__(self) -> str:
        return self.text or "any version"
