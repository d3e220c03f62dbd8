"""The garbage collector's settings for a process that serves: fewer young collections, and
what start-up built frozen out of them once the service is up.

Free of everything else, so that `msgsync serve` can apply them before it imports the
application, whose start-up allocates a great deal and frees little."""

from __future__ import annotations

import gc

__all__ = ["GC_YOUNG_THRESHOLD", "collect_young_less_often", "settle"]

# Young objects the garbage collector lets accumulate before a collection (CPython: 700).
# A request in flight keeps a few dozen alive (its coroutines, scope, headers), so with
# hundreds in flight the default ran a young collection every few requests, and promoted
# what they held, setting off the older generations' collections too. Start-up is the same
# story: importing the framework, the models and the schemas makes objects that all live
# on, and each collection at the default threshold scanned them again.
GC_YOUNG_THRESHOLD = 10_000

_settled = False


def collect_young_less_often() -> None:
    """Young collections every GC_YOUNG_THRESHOLD allocations, from now on."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def settle() -> None:
    """Once per process, when the service is up: what start-up built (modules, the
    framework's routes and models, the pools) lives as long as the process, so it is frozen
    out of every later collection (`gc.freeze`), which then scans only what requests made;
    and young collections run at GC_YOUNG_THRESHOLD. W5 with 200 devices acking: see
    docs/operations.md."""
    global _settled
    if _settled:
        return
    _settled = True
    # The young generations only: they hold what start-up left unreachable (a SQLite
    # start's migration run, the lifespan's temporaries), and the collections that ran
    # during the imports have swept the oldest already. A full collection would traverse
    # every module, class and model built at start-up again to find a handful more.
    gc.collect(1)
    gc.freeze()
    collect_young_less_often()
