"""What a loader skipped and read, counted across its worker processes: bad samples and shards (each also
warned about, the first ``MAX_WARNINGS`` of a kind), and the samples read from each shard."""

from __future__ import annotations

import multiprocessing
import warnings



STAT_NAMES = ("samples", "bad_samples", "missing_frames", "shard_retries", "failed_shards", "broken_shards")
SHARD_EVENTS = ("failed_shards", "broken_shards")  # counted once per shard
MAX_WARNINGS = 50


class BadDataWarning(UserWarning):
    """A sample or a shard was skipped; the loader's ``stats`` count them."""

class LoaderStats:
    """Counters shared by all worker processes of a loader (shared memory, so they survive the workers):
    bad-data events, and the samples read from each shard of ``shards`` (good or not: what a complete read
    of a shard must match in its manifest's count)."""

    def __init__(self, shards: list[str] = ()) -> None:
        self._counts = multiprocessing.Array("q", len(STAT_NAMES))
        self._shard_index = {url: i for i, url in enumerate(shards)}
        self._shard_reads = multiprocessing.Array("q", max(1, len(shards)))
        self._shard_flags = multiprocessing.Array("b", max(1, len(shards)))  # bit per SHARD_EVENTS kind

    def read_from(self, url: str) -> None:
        """Count one sample read from shard ``url`` (URLs outside the loader's list are not counted)."""
        index = self._shard_index.get(url)
        if index is not None:
            with self._shard_reads.get_lock():
                self._shard_reads[index] += 1

    def shard_reads(self) -> list[int]:
        """Samples read from each shard so far, in the loader's shard order."""
        with self._shard_reads.get_lock():
            return list(self._shard_reads[:len(self._shard_index)])

    def add(self, name: str, count: int = 1) -> int:
        """Add to a counter; returns its new value."""
        index = STAT_NAMES.index(name)
        with self._counts.get_lock():
            self._counts[index] += count
            return self._counts[index]

    def report(self, name: str, message: str) -> None:
        """Count one bad-data event and warn about it (the first ``MAX_WARNINGS`` of each kind only)."""
        count = self.add(name)
        if count < MAX_WARNINGS:
            warnings.warn(message, BadDataWarning, stacklevel=2)
        elif count == MAX_WARNINGS:
            warnings.warn(f"{message} (further {name} are counted in the loader's stats, not shown)",
                          BadDataWarning, stacklevel=2)

    def report_shard(self, name: str, url: str, message: str) -> None:
        """Count a shard event (``failed_shards``, ``broken_shards``) once per shard, however many workers,
        epochs or evaluation passes meet it; only the first meeting warns."""
        index = self._shard_index.get(url)
        if index is not None:
            bit = 1 << SHARD_EVENTS.index(name)
            with self._shard_flags.get_lock():
                if self._shard_flags[index] & bit:
                    return
                self._shard_flags[index] |= bit
        self.report(name, message)

    def as_dict(self) -> dict[str, int]:
        with self._counts.get_lock():
            return dict(zip(STAT_NAMES, self._counts[:]))
