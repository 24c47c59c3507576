"""Loader speed, measured side by side in one run on synthetic 240p videos.

    python tools/bench_loader.py [--videos 48] [--frames 90] [--batches 40]

Makes ``--videos`` synthetic 426x240 mp4s (``sifar.data.synth``), shards them at their original size
with the project's shard writer, then prints, all on one core each:

1. the raw bound: decoding the very JPEGs the loader samples, nothing else (frames/s; /8 = clips/s);
2. this loader's training pipeline, 8 frames at 192x192 per clip, in one DataLoader worker process
   (clips/s per worker), and in the calling process (num_workers=0) for reference;
3. the anchor users would otherwise run: decoding each clip's 8 frames from its mp4 with an ffmpeg
   subprocess (one decoder thread), then the same crop and resize;
4. for reference, plain webdataset iteration over the same shards (every tar member through Python).

Goals: (2) >= 150 clips/s per worker and >= 60% of (1)/8; (2) >= 10x (3).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sifar.data import build_loader  # noqa: E402
from sifar.data.ffmpeg import DecodeSettings, ffmpeg_exe  # noqa: E402
from sifar.data.loader import JpegDecoder  # noqa: E402
from sifar.data.sampling import train_indices  # noqa: E402
from sifar.data.shard_reader import read_shard  # noqa: E402
from sifar.data.shard_writer import ShardLimits  # noqa: E402
from sifar.data.sharding import ShardJob, shard_dataset  # noqa: E402
from sifar.data.synth import SynthConfig, make_dataset  # noqa: E402
from sifar.data.transforms import draw_crop_jitter, train_transform  # noqa: E402

CLIP_FRAMES = 8
FRAME_SIZE = 192
WIDTH, HEIGHT = 426, 240


def make_shards(work: Path, videos: int, frames: int) -> tuple[Path, Path]:
    """Synthetic mp4s and their shards (frames kept at 426x240); returns (video folder, shard folder)."""
    video_dir, shard_dir = work / "videos", work / "shards"
    make_dataset(SynthConfig(out=video_dir, videos=videos, frames=frames, width=WIDTH, height=HEIGHT,
                             fps=30.0, val_fraction=0.0), progress=False)
    shard_dataset(ShardJob(dataset="csv", src=video_dir, out=shard_dir, split="train",
                           decode=DecodeSettings(short_side=0, quality=3),
                           limits=ShardLimits(max_samples=max(1, videos // 4)), progress=False))
    return video_dir, shard_dir


def sampled_jpegs(shard_dir: Path) -> tuple[list[list[bytes]], list[dict]]:
    """The JPEGs of one training clip per sample (uniform sampling) and the samples' JSON."""
    rng = random.Random(0)
    clips, metas = [], []
    for shard in sorted(shard_dir.glob("train-*.tar")):
        for sample in read_shard(shard):
            indices = train_indices(len(sample.frames), CLIP_FRAMES, rng)
            clips.append([sample.frames[i] for i in indices])
            metas.append(sample.meta)
    return clips, metas


def rate(count: int, seconds: float) -> float:
    return count / seconds


def bench_decode_bound(clips: list[list[bytes]], backend: str, repeats: int) -> float:
    """Frames/s decoding the sampled JPEGs with ``backend``, best of ``repeats`` passes."""
    decoder = JpegDecoder(backend)
    frames = [jpeg for clip in clips for jpeg in clip]
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for jpeg in frames:
            decoder.decode(jpeg)
        best = max(best, rate(len(frames), time.perf_counter() - start))
    return best


def bench_loader(shard_dir: Path, workers: int, batches: int, decoder: str) -> float:
    """Clips/s of the training pipeline after two warm-up batches (worker start, shuffle buffer filled)."""
    loader = build_loader(shard_dir, "train", num_frames=CLIP_FRAMES, frame_size=FRAME_SIZE, batch_size=16,
                          num_workers=workers, steps_per_epoch=batches + 2, shuffle_buffer=64, decoder=decoder,
                          pin_memory=False)
    iterator = iter(loader)
    for _ in range(2):
        next(iterator)
    start = time.perf_counter()
    clips = sum(len(batch.keys) for batch in iterator)
    return rate(clips, time.perf_counter() - start)


def bench_mp4_anchor(video_dir: Path, metas: list[dict], limit: int) -> float:
    """Clips/s decoding each clip's sampled frames from its mp4 (ffmpeg, one thread), then crop and resize."""
    rng = random.Random(0)
    start = time.perf_counter()
    for meta in metas[:limit]:
        indices = train_indices(meta["num_frames"], CLIP_FRAMES, rng)
        frames = decode_mp4_frames(video_dir / meta["source"], indices, meta["width"], meta["height"])
        train_transform(frames, draw_crop_jitter(rng, True), FRAME_SIZE)
    return rate(min(limit, len(metas)), time.perf_counter() - start)


def decode_mp4_frames(path: Path, indices: list[int], width: int, height: int) -> torch.Tensor:
    wanted = "+".join(f"eq(n\\,{i})" for i in sorted(set(indices)))
    command = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1", "-i", str(path),
               "-vf", f"select={wanted}", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    distinct = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
    row = {index: n for n, index in enumerate(sorted(set(indices)))}
    return torch.from_numpy(distinct[[row[i] for i in indices]])


def bench_plain_webdataset(shard_dir: Path) -> float:
    """Samples/s of plain webdataset iteration (every member read through tarfile), no decoding."""
    urls = [str(p) for p in sorted(shard_dir.glob("train-*.tar"))]
    start = time.perf_counter()
    count = sum(1 for _ in wds.WebDataset(urls, shardshuffle=False))
    return rate(count, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--frames", type=int, default=90, help="frames per video (90: 3 s at 30 fps)")
    parser.add_argument("--batches", type=int, default=40, help="timed batches of 16 clips per loader run")
    parser.add_argument("--repeats", type=int, default=3, help="passes of the decode bound (best kept)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        video_dir, shard_dir = make_shards(Path(tmp), args.videos, args.frames)
        clips, metas = sampled_jpegs(shard_dir)
        bound_tv = bench_decode_bound(clips, "torchvision", args.repeats)
        bound_pil = bench_decode_bound(clips, "pillow", args.repeats)
        loader_tv = bench_loader(shard_dir, 1, args.batches, "torchvision")
        loader_pil = bench_loader(shard_dir, 1, args.batches, "pillow")
        loader_inproc = bench_loader(shard_dir, 0, args.batches, "auto")
        anchor = bench_mp4_anchor(video_dir, metas, limit=len(metas))
        plain = bench_plain_webdataset(shard_dir)
    bound = max(bound_tv, bound_pil) / CLIP_FRAMES
    best_loader = max(loader_tv, loader_pil)
    rows = [
        ("(1) JPEG decode bound, torchvision.io", f"{bound_tv:8.0f} frames/s", f"{bound_tv / CLIP_FRAMES:6.0f} clips/s"),
        ("(1) JPEG decode bound, Pillow", f"{bound_pil:8.0f} frames/s", f"{bound_pil / CLIP_FRAMES:6.0f} clips/s"),
        ("(2) loader, 1 worker, torchvision decoder", f"{loader_tv:8.0f} clips/s", f"{loader_tv / bound:6.0%} of (1)/8"),
        ("(2) loader, 1 worker, Pillow decoder", f"{loader_pil:8.0f} clips/s", f"{loader_pil / bound:6.0%} of (1)/8"),
        ("(2) loader, in-process (num_workers=0)", f"{loader_inproc:8.0f} clips/s", f"{loader_inproc / bound:6.0%} of (1)/8"),
        ("(3) anchor: ffmpeg mp4 decode per clip", f"{anchor:8.1f} clips/s", f"(2)/(3) = {best_loader / anchor:.1f}x"),
        ("(4) plain webdataset tar iteration", f"{plain:8.0f} samples/s", "no decoding"),
    ]
    print(f"{args.videos} synthetic videos, {args.frames} frames of {WIDTH}x{HEIGHT}; "
          f"clips of {CLIP_FRAMES} frames at {FRAME_SIZE}x{FRAME_SIZE}; one core per measurement")
    width = max(len(r[0]) for r in rows)
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value}  {ratio}")
    verdict = (best_loader >= 150, best_loader >= 0.6 * bound, best_loader >= 10 * anchor)
    print(f"goals: (2) >= 150 clips/s: {verdict[0]};  (2) >= 60% of (1)/8: {verdict[1]};  "
          f"(2) >= 10x (3): {verdict[2]}")


if __name__ == "__main__":
    main()
