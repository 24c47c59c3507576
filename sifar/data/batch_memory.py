"""Batches in reused shared memory: the records a worker ships, and the buffers its batches are written
into, handed out again only once the consumer has dropped every view of a batch."""

from __future__ import annotations

import weakref
from typing import Any, Iterable, Iterator, NamedTuple

import torch

from sifar.torch_compat import shared_uint8



class Batch(NamedTuple):
    """``frames`` uint8 (B, T, C, H, W), or (B, V, T, C, H, W) when evaluating; ``labels`` int64 (B,)."""

    frames: torch.Tensor
    labels: torch.Tensor
    keys: list[str]


class Shipment(NamedTuple):
    """A batch as a worker sends it; :func:`free_when_dropped` makes it a :class:`Batch`.

    ``labels`` stay a list: a tensor made in a worker travels in a shared-memory segment of its own, one per
    batch (~1 ms of the worker's time for 32 labels). ``slot``: the frames' buffer in the worker's
    BatchMemory (-1: none).
    """

    frames: torch.Tensor
    labels: list[int]
    keys: list[str]
    slot: int


class Clip(NamedTuple):
    """One sample as the decode stages produce it."""

    frames: torch.Tensor
    label: int
    key: str

class BatchMemory:
    """A DataLoader worker's shared-memory frame buffers, reused from batch to batch.

    Memory written for the first time costs a page fault per 4 KiB page, and torch gives a worker new
    shared memory for every batch: measured in tools/bench_loader.py, about 0.7 ms per clip of 8 frames
    at 192x192, half the cost of decoding the clip's JPEGs. So each worker keeps up to ``slots`` buffers
    in shared memory; a batch's frames are a view of one, and reach the main process without a copy.
    The main process marks a buffer free again (``free[slot] = 1``) once no tensor there views it any
    more (:func:`free_when_dropped`); only then is it refilled. While every buffer is taken (the
    consumer holds on to batches), batches get fresh memory. With ``slots == 0`` (the loader in the
    calling process, or ``reuse_memory=False``) every batch gets fresh memory.
    """

    def __init__(self, free: Any, first_slot: int, slots: int, shared: bool):
        self._free, self._slots, self._shared = free, range(first_slot, first_slot + slots), shared
        self._buffers: dict[int, torch.Tensor] = {}

    def take(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, int]:
        """An uninitialized uint8 tensor of ``shape`` and its slot (-1: fresh memory, not pooled)."""
        for slot in self._slots:
            if self._free[slot]:
                buffer = self._buffers.get(slot)
                if buffer is None or buffer.shape[1:] != shape[1:] or len(buffer) < shape[0]:
                    buffer = self._buffers[slot] = _new_frames(shape, self._shared)
                self._free[slot] = 0
                return buffer[:shape[0]], slot
        return _new_frames(shape, self._shared), -1

    def release(self, slot: int) -> None:
        """Mark a buffer taken but never shipped free again (-1, fresh memory: nothing to do)."""
        if slot >= 0:
            self._free[slot] = 1


class BatchRows:
    """A batch filled clip by clip in one of ``memory``'s buffers, channels-last ((B, [V,] T, H, W, C)) in memory."""

    def __init__(self, memory: BatchMemory, shape: tuple[int, ...]):
        self.frames, self.slot = memory.take(shape)
        self.labels: list[int] = []
        self.keys: list[str] = []

    def next_row(self) -> torch.Tensor:
        """The next clip's row, ([V,] T, C, H, W) channels-last; it counts once :meth:`add` ed."""
        return self.frames[len(self.keys)].movedim(-1, -3)

    def add(self, clip: Clip) -> bool:
        """Count the row just written by ``clip``; True when the batch is full."""
        self.labels.append(clip.label)
        self.keys.append(clip.key)
        return len(self.keys) == len(self.frames)

    def shipment(self) -> Shipment:
        return Shipment(self.frames.movedim(-1, -3), self.labels, self.keys, self.slot)


def _new_frames(shape: tuple[int, ...], shared: bool) -> torch.Tensor:
    if not shared:
        return torch.empty(shape, dtype=torch.uint8)
    return shared_uint8(shape)


def free_when_dropped(shipments: Iterable[Shipment], free: Any) -> Iterator[Batch]:
    """The batches; a pooled buffer is marked free once the last tensor viewing its memory is gone."""
    for frames, labels, keys, slot in shipments:
        if slot >= 0:
            weakref.finalize(frames.untyped_storage(), free.__setitem__, slot, 1).atexit = False
        yield Batch(frames, torch.tensor(labels, dtype=torch.int64), keys)


def collate_clips(memory: BatchMemory, clips: list[Clip]) -> Shipment:
    """Copy clips into a batch in one of ``memory``'s buffers: channels-last, returned as a permuted view."""
    batch = BatchRows(memory, (len(clips), *clips[0].frames.movedim(-3, -1).shape))
    for clip in clips:
        batch.next_row().copy_(clip.frames)
        batch.add(clip)
    return batch.shipment()
