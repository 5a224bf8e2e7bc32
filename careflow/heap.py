"""Garbage collection for careflow's long-running processes (run, worker, scheduler, serve).

Python's full collections walk every tracked object. After start-up most of them are
imported modules, SQLAlchemy's mappers and caches, settings and plugins, which live as long
as the process, yet a day's planning or a batch's delivery allocates enough short-lived
objects to trigger full collections that walk them all again: measured while planning a
quiet day over 10^6 customers, about 70 ms of a 250–370 ms run went to the collector, 51 ms
of it in full collections. Moving the start-up objects to the permanent generation
(``gc.freeze``) and collecting the young generation less eagerly cuts that several-fold
(``bench/planning_profile.py`` reports the collector's share of a day: ~4 ms).
Reference counting still frees everything that is not in a cycle immediately; only cyclic
garbage waits a little longer.
"""

from __future__ import annotations

import gc

# Allocations (minus deallocations) between young-generation collections; CPython's default is 700.
YOUNG_THRESHOLD = 10_000


def settle_after_startup() -> None:
    """Collect once, freeze what start-up built, and collect the young generation less often.

    Once per process: a second call (several commands run in one test process) does nothing.
    """
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if young:  # 0 means the collector is disabled: leave it so
        gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
