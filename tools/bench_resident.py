"""Training batches from a resident split against the streaming loader, side by side in one run.

    python -m tools.bench_resident [--videos 400] [--size 64] [--batches 20] [--batch-size 128] [--workers 2]
                                   [--device cpu]

Makes ``--videos`` synthetic videos of 16 frames (``sifar-tools synth``) and shards them, then times
``--batches`` training batches of 8 frames per clip at the stored size, as the temporal study draws them:
(1) the streaming loader with ``--workers`` worker processes (its start included: the trainer pays it every
epoch), (2) the resident split (``LoaderSettings(resident=True)``) on ``--device``, its one-off decode of the
split reported apart. Prints clips/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sifar.data import ClipSettings, LoaderSettings, build_loader
from sifar.data.sharding import shard_synthetic
from sifar.data.synth import SynthConfig, make_dataset


def timed_batches(loader, batches: int, device: torch.device) -> float:
    """Clips per second over the first ``batches`` batches, each moved to ``device`` and waited for."""
    began, clips = time.perf_counter(), 0
    for number, batch in enumerate(loader, 1):
        batch.frames.to(device)
        clips += len(batch.keys)
        if number == batches:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clips / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        synth = SynthConfig(out=Path(tmp) / "synth", videos=args.videos, frames=16, width=args.size,
                            height=args.size, val_fraction=0.0)
        make_dataset(synth, progress=False)
        shard_synthetic(synth.out, Path(tmp) / "shards", 64)
        clip = ClipSettings(num_frames=8, frame_size=args.size, flip="off")
        steps = {"training": True, "steps_per_epoch": args.batches}
        streaming = build_loader(Path(tmp) / "shards", clip, LoaderSettings(batch_size=args.batch_size,
                                                                            workers=args.workers), **steps)
        stream_rate = timed_batches(streaming, args.batches, device)
        began = time.perf_counter()
        resident = build_loader(Path(tmp) / "shards", clip, LoaderSettings(batch_size=args.batch_size,
                                                                           resident=True), device=device, **steps)
        decode_s = time.perf_counter() - began
        resident_rate = timed_batches(resident, args.batches, device)
    print(f"{args.batches} batches of {args.batch_size} clips, 8 frames of {args.size} px, from {args.videos} videos")
    print(f"streaming loader, {args.workers} workers: {stream_rate:8.0f} clips/s")
    print(f"resident split on {device}:       {resident_rate:8.0f} clips/s (after decoding the split once: "
          f"{decode_s:.1f} s)")
    print(f"ratio: {resident_rate / stream_rate:.1f}x")


if __name__ == "__main__":
    main()
