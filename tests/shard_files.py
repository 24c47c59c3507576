"""Small real shards in the shard contract's layout, written with plain ``tarfile``, for the loader tests.

Frame ``t`` of every sample is a tiny JPEG whose red channel ramps left to right, green ramps top to
bottom (so crops and flips can be checked across frames), and blue encodes ``t`` (``BLUE_STEP * t``),
so a test can read back which frames it got and in which order.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import os
import socket
import tarfile
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from sifar.data.manifest import Manifest, ShardInfo, write_manifest

BLUE_STEP = 8


@dataclass
class Sample:
    key: str
    label: int
    num_frames: int
    width: int = 64
    height: int = 48
    dataset: str = "synth"


def frame_jpeg(index: int, width: int, height: int) -> bytes:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    blue = np.full((height, width), min(255, BLUE_STEP * index), np.float32)
    pixels = np.stack([x, y, blue], -1).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def frame_index(blue: float) -> int:
    """The frame index a decoded frame's mean blue value encodes."""
    return int(round(float(blue) / BLUE_STEP))


def sample_meta(sample: Sample) -> dict:
    return {"key": sample.key, "label": sample.label, "label_name": f"class{sample.label}",
            "num_frames": sample.num_frames, "fps": 25.0, "width": sample.width, "height": sample.height,
            "orig_width": sample.width, "orig_height": sample.height, "source": f"{sample.key}.mp4",
            "dataset": sample.dataset}


def sample_json(sample: Sample) -> bytes:
    return json.dumps(sample_meta(sample)).encode()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: str | os.PathLike, samples: list[Sample], tar_format: int = tarfile.GNU_FORMAT,
                broken: dict[str, bytes] | None = None, drop: set[str] = frozenset()) -> int:
    """Write ``samples``; ``broken`` replaces members' data, ``drop`` leaves members out. Returns frames."""
    broken = broken or {}
    frames = 0
    with tarfile.open(path, "w", format=tar_format) as tar:
        for sample in samples:
            members = [(f"{sample.key}.json", sample_json(sample))]
            members += [(f"{sample.key}.{t:06d}.jpg", frame_jpeg(t, sample.width, sample.height))
                        for t in range(sample.num_frames)]
            for name, data in members:
                if name not in drop:
                    add_member(tar, name, broken.get(name, data))
            frames += sample.num_frames
    return frames


def write_split(folder: str | os.PathLike, split: str = "train", shards: int = 2, per_shard: int = 4,
                num_frames: int = 12, dataset: str = "synth", classes: int = 3, manifest: bool = True,
                **shard_options) -> list[Sample]:
    """``shards`` shards of ``per_shard`` samples each (labels cycle over ``classes``), plus the manifest."""
    os.makedirs(folder, exist_ok=True)
    everything, infos = [], []
    for s in range(shards):
        samples = [Sample(f"{split}{s}x{i}", (s * per_shard + i) % classes, num_frames, dataset=dataset)
                   for i in range(per_shard)]
        name = f"{split}-{s:06d}.tar"
        path = os.path.join(folder, name)
        frames = write_shard(path, samples, **shard_options)
        infos.append(ShardInfo(name, len(samples), frames, os.path.getsize(path)))
        everything += samples
    if manifest:
        write_manifest(Manifest(dataset, split, [f"class{c}" for c in range(classes)], infos),
                       os.path.join(folder, f"{split}.json"))
    return everything


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class _FaultPlan:
    """Which downloads go wrong: files in ``break_once`` are cut off half-way the first time they are asked
    for (then the connection is closed); files in ``stall`` send half and then nothing (the connection is
    held open until the server stops) the first N times, every time for None."""

    def __init__(self, break_once: set[str], stall: dict[str, int | None]):
        self.break_once, self.stall = set(break_once), dict(stall)
        self.stalled: Counter = Counter()
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def fault_for(self, name: str) -> str | None:
        with self.lock:
            if name in self.break_once:
                self.break_once.discard(name)
                return "break"
            if name in self.stall:
                self.stalled[name] += 1
                times = self.stall[name]
                return "stall" if times is None or self.stalled[name] <= times else None
        return None


class _FaultyHandler(_QuietHandler):
    def __init__(self, *args, plan: _FaultPlan, **kwargs):
        self.plan = plan
        super().__init__(*args, **kwargs)

    def copyfile(self, source, outputfile):
        fault = self.plan.fault_for(self.path.lstrip("/"))
        if fault is None:
            return super().copyfile(source, outputfile)
        data = source.read()
        outputfile.write(data[:len(data) // 2])
        outputfile.flush()
        if fault == "stall":
            self.plan.stopped.wait(timeout=120)
        self.close_connection = True


@contextlib.contextmanager
def serve_folder(folder: str | os.PathLike, break_once: set[str] = frozenset(),
                 stall: dict[str, int | None] | None = None) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a real server, in a thread); yields its base URL.

    Files named in ``break_once`` are cut off half-way the first time they are downloaded; files in
    ``stall`` stall half-way the first N times (None: always).
    """
    plan = _FaultPlan(break_once, stall or {})
    handler = functools.partial(_FaultyHandler, directory=str(folder), plan=plan)
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            plan.stopped.set()
            server.shutdown()
            thread.join()


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A server on 127.0.0.1 that accepts every connection and never answers; yields ``http://host:port``."""
    held: list[socket.socket] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    stopped = threading.Event()

    def accept() -> None:
        while not stopped.is_set():
            try:
                held.append(listener.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopped.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()
