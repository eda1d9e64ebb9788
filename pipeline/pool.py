"""Ordered, bounded map over a process pool: the one way the stages fan work out to processes."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def resolve_workers(workers: int | None) -> int:
    """A `workers` param, or (null) every core this process may run on."""
    if workers:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ordered_map(pool, fn: Callable[[Any], Any], tasks: Iterable, workers: int) -> Iterator:
    """fn(task) for every task, in task order, with at most 2 x `workers` + 1 tasks in flight.

    Pool.imap would queue every task at once and buffer every result the parent has not taken
    yet: with a slow consumer (MTCNN or duplicate removal in the parent) that is the whole
    decoded set in memory. Taking results in submission order keeps the output deterministic
    whatever finishes first."""
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.apply_async(fn, (task,)))
        if len(pending) > 2 * workers:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()
