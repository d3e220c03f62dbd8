"""The service's path templates, read from its OpenAPI document: which template a raw path
answers to, and with which methods (for metrics labels and a 405's Allow)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["DocumentedPath", "documented_paths"]

_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


@dataclass(frozen=True, slots=True)
class DocumentedPath:
    pattern: re.Pattern[str]  # matches the raw paths of this template, whole
    template: str  # e.g. /conversations/{peer}/messages
    methods: frozenset[str]  # upper case, as on the wire


def documented_paths(app: Any) -> list[DocumentedPath]:
    """Every path of app's OpenAPI document (built once by the app and cached there)."""
    return [
        DocumentedPath(
            re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))),
            template,
            frozenset(method.upper() for method in item if method in _METHODS),
        )
        for template, item in app.openapi().get("paths", {}).items()
    ]
