"""The directory of prometheus_client's multiprocess mode, set up before any worker starts.

Kept apart from app.metrics, and free of prometheus_client: that library decides at
import whether it writes to this directory, and creates files in it for every series
defined at import. Importing it before the directory is emptied would lose those files.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["MULTIPROC_DIR", "prepare_multiprocess"]

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess(workers: int) -> None:
    """Multiprocess mode for a server of several workers, set up before they start.

    An operator's PROMETHEUS_MULTIPROC_DIR is used (and emptied: files of an earlier run
    would add its counts to this one's); otherwise a fresh directory, removed at exit. One
    worker keeps the in-memory registry unless the operator set the directory.
    """
    given = os.environ.get(MULTIPROC_DIR)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    elif workers > 1:
        created = tempfile.mkdtemp(prefix="msgsync-metrics-")
        # Inherited by the workers, which read it when they first import prometheus_client.
        os.environ[MULTIPROC_DIR] = created
        atexit.register(shutil.rmtree, created, ignore_errors=True)
