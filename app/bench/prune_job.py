"""W6's retention run, in a process of its own so that it does not share the bench's event loop.

Usage: python -m app.bench.prune_job DATABASE_URL MAX_AGE_SECONDS MAX_ENTRIES
Prints one JSON line: {"elapsed_s": ..., "result": ...}.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import sys
import time
from datetime import timedelta
from typing import Any

import orjson

from app.config import Settings
from app.store import open_database


def _max_age(prune: Any, seconds: float) -> Any:
    """The job is written on another branch: pass max_age in the type its signature names."""
    parameter = inspect.signature(prune).parameters.get("max_age")
    annotation = str(parameter.annotation) if parameter is not None else ""
    if "timedelta" not in annotation and ("int" in annotation or "float" in annotation):
        return seconds
    return timedelta(seconds=seconds)


def _plain(result: Any) -> Any:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if isinstance(result, dict | list | int | float | str | None):
        return result
    return repr(result)


async def _run(database_url: str, max_age_seconds: float, max_entries: int) -> dict[str, Any]:
    # Imported by name: the job lands from another branch (issue 4).
    prune = importlib.import_module("app.inbox.retention").prune

    db = open_database(Settings(database_url=database_url))
    try:
        began = time.perf_counter()
        outcome = prune(db, _max_age(prune, max_age_seconds), max_entries)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        elapsed = time.perf_counter() - began
    finally:
        await db.dispose()
    return {"elapsed_s": elapsed, "result": _plain(outcome)}


def main(argv: list[str]) -> int:
    database_url, max_age, max_entries = argv
    report = asyncio.run(_run(database_url, float(max_age), int(max_entries)))
    sys.stdout.write(orjson.dumps(report, default=repr).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
