"""Loader speed, measured side by side in one run on synthetic 240p videos.

    python -m tools.bench_loader [--videos 48] [--frames 90] [--batches 20] [--batch-size 32] [--rounds 3]
                                 [--grain 0]

Makes ``--videos`` synthetic 426x240 mp4s (``sifar.data.synth``; with ``--grain``, re-encoded with film
grain, see :func:`add_film_grain`), shards them at their original size with the project's shard writer,
then prints, each on one core (torch threads 1), per CPU second of the
process doing the work (independent of whatever else the machine runs) and per wall second:

1. the raw bound: decoding the very JPEGs the loader samples, whole frames, nothing else (frames/s; /8 =
   clips/s), with each decoder the loader offers (at its best: into reused memory) and torchvision's; the
   fastest is the bound. For reference, (1') decoding only the training crops of those frames with the
   ``libjpeg`` decoder (crops drawn as the loader draws them), which is the decoding that loader does;
2. this loader's training pipeline, 8 frames at 192x192 per clip, batches of 32 (the trainer's
   default), in one DataLoader worker process (clips/s per worker) with each decoder (``libjpeg``, the
   default where built, decodes only each clip's crop; the others decode whole frames), and in the
   calling process (num_workers=0, the default decoder) for reference;
3. the anchor users would otherwise run: decoding each clip's 8 frames from its mp4 with an ffmpeg
   subprocess (one decoder thread), then the same crop and resize;
4. for reference, plain webdataset iteration over the same shards (every tar member through Python).

Goals: (2) >= 150 clips/s per worker and >= 60% of (1)/8; (2) >= 10x (3).

(1), (1') and (2) are measured in ``--rounds`` interleaved rounds (one decode pass per decoder, then one run
of each loader) and each keeps its best round: on a shared machine the load changes over a minute, and
alternating exposes the bound and the loader to the same conditions.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import ffmpeg
import torch
import webdataset as wds

from sifar.data import ClipSettings, LoaderSettings, build_loader
from sifar.data.ffmpeg import DecodeSettings, quiet_command
from sifar.data.decoders import JpegDecoder, region_decoding_available
from sifar.data.sampling import train_indices
from sifar.data.shard_reader import read_shard
from sifar.data.shard_writer import ShardLimits
from sifar.data.sharding import ShardJob, shard_dataset
from sifar.data.synth import SynthConfig, encoder_options, make_dataset
from sifar.data.transforms import draw_crop_jitter, train_transform

CLIP_FRAMES = 8
BACKENDS = ("libjpeg", "simplejpeg", "pillow") if region_decoding_available() else ("simplejpeg", "pillow")
WARMUP = 3
FRAME_SIZE = 192
WIDTH, HEIGHT = 426, 240


def make_shards(work: Path, videos: int, frames: int, grain: int = 0) -> tuple[Path, Path]:
    """Synthetic mp4s and their shards (frames kept at 426x240); returns (video folder, shard folder)."""
    video_dir, shard_dir = work / "videos", work / "shards"
    make_dataset(SynthConfig(out=video_dir, videos=videos, frames=frames, width=WIDTH, height=HEIGHT,
                             fps=30.0, val_fraction=0.0), progress=False)
    if grain:
        add_film_grain(video_dir, grain)
    shard_dataset(ShardJob(dataset="csv", src=video_dir, out=shard_dir, split="train",
                           decode=DecodeSettings(short_side=0, quality=3),
                           limits=ShardLimits(max_samples=max(1, videos // 4)), progress=False))
    return video_dir, shard_dir


def add_film_grain(video_dir: Path, strength: int) -> None:
    """Re-encode every mp4 under ``video_dir`` with ffmpeg's temporal noise filter at ``strength`` (0-100).

    The synthetic videos are flat shapes on smooth backgrounds, and their 426x240 frames make JPEGs of ~4 KiB.
    Decoding a JPEG costs more the more it holds, while the loader's crop and resize cost the same for
    any content, so the loader's share of the decode bound depends on the frames. Grain of strength 12
    gives JPEGs of ~11 KiB: frames with some of the sensor noise and fine texture of real footage.
    """
    for path in sorted(video_dir.rglob("*.mp4")):
        grainy = path.with_name(f".{path.stem}.grain.mp4")
        subprocess.run(quiet_command(
            ffmpeg.input(str(path))
            .output(str(grainy), vf=f"noise=alls={strength}:allf=t+u", pix_fmt="yuv420p", **encoder_options())
            .overwrite_output()), check=True)
        grainy.replace(path)


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


class Clock:
    """CPU seconds of this process and of its finished children (DataLoader workers, ffmpeg), and wall seconds.

    CPU time is the per-core measure: it does not depend on what else the machine runs meanwhile.
    """

    def __enter__(self) -> "Clock":
        self._start = self._now()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.own, self.children = (b - a for a, b in zip(self._start, self._now()))

    @staticmethod
    def _now() -> tuple[float, float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.perf_counter(), time.process_time(), children.ru_utime + children.ru_stime


def bench_decode_bound(clips: list[list[bytes]], decode_clip: Callable[[list[bytes]], object]) -> float:
    """Frames per CPU second decoding the sampled JPEGs with ``decode_clip``, one pass."""
    with Clock() as clock:
        for clip in clips:
            decode_clip(clip)
    return len(clips) * CLIP_FRAMES / clock.own


def crop_decoder() -> Callable[[list[bytes]], object] | None:
    """Decoding only the training crop of each clip's frames (``libjpeg``), crops drawn as the loader draws
    them (flips included); None where that decoder is not built."""
    if not region_decoding_available():
        return None
    decoder, rng = JpegDecoder("libjpeg", reuse_memory=True), random.Random(0)
    return lambda clip: decoder.crops(dict(enumerate(clip)), range(len(clip)), draw_crop_jitter(rng, True))


def clip_decoders() -> dict[str, Callable[[list[bytes]], object]]:
    """The loader's decoders, and torchvision's libjpeg-turbo decoder as another candidate for the bound."""
    decoders = {name: JpegDecoder(name, reuse_memory=True).decode_many for name in BACKENDS}  # each at its best
    try:
        from torchvision.io import ImageReadMode  # importing torchvision.io registers its image operators
    except ImportError:
        return decoders

    def torchvision_decode(clip: list[bytes]) -> list[torch.Tensor]:
        # the operator torchvision.io.decode_jpeg runs; that wrapper warns on every call that it is deprecated
        return [torch.ops.image.decode_jpeg(torch.frombuffer(bytearray(jpeg), dtype=torch.uint8),
                                            ImageReadMode.RGB.value, False) for jpeg in clip]

    return {**decoders, "torchvision": torchvision_decode}


def run_loader(shard_dir: Path, workers: int, batches: int, batch_size: int, decoder: str) -> tuple[Clock, int]:
    clip = ClipSettings(num_frames=CLIP_FRAMES, frame_size=FRAME_SIZE)
    settings = LoaderSettings(batch_size=batch_size, workers=workers, shuffle_buffer=64, decoder=decoder)
    loader = build_loader(shard_dir, clip, settings, training=True, split="train", steps_per_epoch=batches,
                          pin_memory=False)
    with Clock() as clock:
        clips = sum(len(batch.keys) for batch in loader)
    return clock, clips


def bench_loader(shard_dir: Path, workers: int, batches: int, batch_size: int, decoder: str) -> tuple[float, float]:
    """(clips per CPU second of the process running the pipeline, clips per wall second).

    A run of ``WARMUP`` batches is subtracted from a run of ``WARMUP + batches``: that removes worker start
    and filling the shuffle buffer, and leaves the steady state.
    """
    short, short_clips = run_loader(shard_dir, workers, WARMUP, batch_size, decoder)
    long, long_clips = run_loader(shard_dir, workers, WARMUP + batches, batch_size, decoder)
    cpu = (long.children - short.children) if workers else (long.own - short.own)
    return (long_clips - short_clips) / cpu, (long_clips - short_clips) / (long.wall - short.wall)


def best_rounds(clips: list[list[bytes]], shard_dir: Path, args) -> tuple[dict, float | None, dict, tuple]:
    """(1), (1') and (2) in ``args.rounds`` interleaved rounds, each figure the best of its rounds.

    A first loader run, not counted, pays one-time costs (imports, page cache).
    """
    decoders, crops = clip_decoders(), crop_decoder()
    run_loader(shard_dir, 1, WARMUP, args.batch_size, "auto")
    bound: dict[str, list[float]] = {name: [] for name in decoders}
    crop_rates: list[float] = []
    loader: dict[str, list[tuple[float, float]]] = {name: [] for name in BACKENDS}
    in_process: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        for name, decoder in decoders.items():
            bound[name].append(bench_decode_bound(clips, decoder))
        if crops is not None:
            crop_rates.append(bench_decode_bound(clips, crops))
        for name in BACKENDS:
            loader[name].append(bench_loader(shard_dir, 1, args.batches, args.batch_size, name))
        in_process.append(bench_loader(shard_dir, 0, args.batches, args.batch_size, "auto"))
    return ({name: max(rates) for name, rates in bound.items()}, max(crop_rates, default=None),
            {name: _best(runs) for name, runs in loader.items()}, _best(in_process))


def _best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return max(cpu for cpu, _ in runs), max(wall for _, wall in runs)


def bench_mp4_anchor(video_dir: Path, metas: list[dict]) -> tuple[float, float]:
    """(clips per CPU second, per wall second) decoding each clip's sampled frames from its mp4 with ffmpeg
    (one decoder thread), then the same crop and resize."""
    rng = random.Random(0)
    with Clock() as clock:
        for meta in metas:
            indices = train_indices(meta["num_frames"], CLIP_FRAMES, rng)
            frames = decode_mp4_frames(video_dir / meta["source"], indices, meta["width"], meta["height"])
            train_transform(frames, draw_crop_jitter(rng, True), FRAME_SIZE)
    return len(metas) / (clock.own + clock.children), len(metas) / clock.wall


def decode_mp4_frames(path: Path, indices: list[int], width: int, height: int) -> torch.Tensor:
    wanted = "+".join(f"eq(n\\,{i})" for i in sorted(set(indices)))
    command = quiet_command(ffmpeg.input(str(path), threads=1)
                            .output("pipe:1", vf=f"select={wanted}", fps_mode="passthrough", format="rawvideo",
                                    pix_fmt="rgb24"))
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    distinct = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, height, width, 3)
    row = {index: n for n, index in enumerate(sorted(set(indices)))}
    return distinct[[row[i] for i in indices]]


def bench_plain_webdataset(shard_dir: Path) -> float:
    """Samples per CPU second of plain webdataset iteration (every member read through tarfile), no decoding."""
    urls = [str(p) for p in sorted(shard_dir.glob("train-*.tar"))]
    with Clock() as clock:
        count = sum(1 for _ in wds.WebDataset(urls, shardshuffle=False))
    return count / clock.own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--frames", type=int, default=90, help="frames per video (90: 3 s at 30 fps)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per loader run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of (1) and (2); best kept")
    parser.add_argument("--grain", type=int, default=0,
                        help="film grain added to the synthetic videos (ffmpeg noise strength, 0-100; 0: none)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        video_dir, shard_dir = make_shards(Path(tmp), args.videos, args.frames, args.grain)
        clips, metas = sampled_jpegs(shard_dir)
        bound, crops, loader, in_process = best_rounds(clips, shard_dir, args)
        anchor = bench_mp4_anchor(video_dir, metas)
        plain = bench_plain_webdataset(shard_dir)
    jpeg_kb = sum(len(jpeg) for clip in clips for jpeg in clip) / (1024 * CLIP_FRAMES * len(clips))
    print_table(args, jpeg_kb, bound, crops, loader, in_process, anchor, plain)


def print_table(args, jpeg_kb: float, bound: dict[str, float], crops: float | None,
                loader: dict[str, tuple[float, float]], in_process: tuple[float, float], anchor: tuple[float, float],
                plain: float) -> None:
    best_bound = max(bound.values()) / CLIP_FRAMES
    best = max(cpu for cpu, _ in loader.values())
    print(f"{args.videos} synthetic videos (film grain {args.grain}), {args.frames} frames of {WIDTH}x{HEIGHT} each, "
          f"JPEGs of {jpeg_kb:.1f} KiB on average; clips of {CLIP_FRAMES} frames at {FRAME_SIZE}x{FRAME_SIZE}, "
          f"batches of {args.batch_size}; torch threads 1; (1), (2): best of {args.rounds} interleaved rounds; "
          f"the loader's default decoder: {JpegDecoder().backend}")
    print(f"{'':44}{'per CPU second':>16}{'per wall second':>17}  ratio")
    rows = [(f"(1) JPEG decode bound, {name}", f"{rate:10.0f} fr/s", "", f"= {rate / CLIP_FRAMES:.0f} clips/s")
            for name, rate in bound.items()]
    if crops is not None:
        rows.append(("(1') only the crops, libjpeg", f"{crops:10.0f} fr/s", "", f"= {crops / CLIP_FRAMES:.0f} clips/s"))
    rows += [(f"(2) loader, 1 worker process, {name}", f"{cpu:9.0f} clips", f"{wall:10.0f} clips",
              f"{cpu / best_bound:.0%} of best (1)/8") for name, (cpu, wall) in loader.items()]
    rows.append(("(2) loader, in the calling process", f"{in_process[0]:9.0f} clips", f"{in_process[1]:10.0f} clips",
                 f"{in_process[0] / best_bound:.0%} of best (1)/8"))
    rows.append(("(3) anchor: ffmpeg decodes each clip's mp4", f"{anchor[0]:9.1f} clips", f"{anchor[1]:10.1f} clips",
                 f"best (2) / (3) = {best / anchor[0]:.1f}x"))
    rows.append(("(4) plain webdataset iteration (no decode)", f"{plain:7.0f} samples", "", ""))
    for name, cpu, wall, ratio in rows:
        print(f"{name:44}{cpu:>16}{wall:>17}  {ratio}")
    print(f"goals (per CPU second): (2) >= 150 clips/s: {best >= 150}; (2) >= 60% of (1)/8: "
          f"{best >= 0.6 * best_bound}; (2) >= 10x (3): {best >= 10 * anchor[0]}")


if __name__ == "__main__":
    main()
