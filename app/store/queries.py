"""Named SQL: the PostgreSQL store's statements live whole in `.sql` files, loaded by name.

A file holds one or more statements, each after a line `-- name: <name>`; the lines up to
the next such line (or the end) are the statement, comments included. Parameters use
psycopg's `%(name)s` style. Nothing is assembled by string surgery: a variant of a
statement is a statement of its own, with a name of its own.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

__all__ = ["Queries", "load"]

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class Queries:
    """The statements of one `.sql` file, by name."""

    def __init__(self, source: str, origin: str) -> None:
        self._origin = origin
        self._statements: dict[str, str] = {}
        parts = _NAME.split(source)
        for name, text in zip(parts[1::2], parts[2::2], strict=True):
            if name in self._statements:
                raise ValueError(f"{origin}: statement {name!r} is defined twice")
            self._statements[name] = text.strip() + "\n"

    def __getitem__(self, name: str) -> str:
        try:
            return self._statements[name]
        except KeyError:
            raise KeyError(f"{self._origin} has no statement {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._statements

    def names(self) -> list[str]:
        return list(self._statements)


@cache
def load(filename: str, package: str = "app.store.postgresql") -> Queries:
    """The named statements of `filename`, a file shipped in `package` (and in the wheel)."""
    source = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    return Queries(source, f"{package}/{filename}")
