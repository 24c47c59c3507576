"""Worker processes for parallel ffmpeg work (sharding, synthetic videos).

On Linux workers are forked: they start in milliseconds with everything the parent imported (torch
included) and never re-run the caller's script, so ``shard_dataset`` works from a plain script, a notebook
or stdin without a ``__main__`` guard. Create the pool before any thread (e.g. a progress bar) starts.
Elsewhere the platform's default start method is used.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import os
import sys


def available_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_pool(workers: int) -> multiprocessing.pool.Pool:
    """A pool of ``workers`` processes (use as a context manager)."""
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    return context.Pool(max(1, workers))
