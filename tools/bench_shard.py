"""Benchmark ``sifar-tools shard`` against ffmpeg alone decoding and re-encoding the same videos to JPEG files.

Both sides run side by side in one process on the same synthetic videos, with the same number of parallel
ffmpeg processes and decoder threads; each is timed ``--repeats`` times and the best run counts. The ratio
is ffmpeg's time over ours (goal: >= 0.9 at 1 worker). Each row also gives frames/s per core (all cores
are shared out between the workers as ffmpeg threads) and the stored bytes per frame, the two figures that
size a whole dataset's job (docs/SHARDING.md). The one-time start of the worker pool is measured and shown
apart.

    python -m tools.bench_shard --videos 24 --sizes 426x240,1280x720 --qualities 3,5,8 --workers 1,2
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sifar.data.ffmpeg import DecodeSettings, ffmpeg_exe
from sifar.data.sharding import ShardJob, shard_dataset
from sifar.data.synth import SynthConfig, make_dataset
from sifar.data.workers import available_cores


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--sizes", default="426x240", help="comma-separated WxH of the synthetic videos")
    parser.add_argument("--frames", type=int, default=48, help="frames per video")
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--qualities", default=str(DecodeSettings.quality), help="comma-separated -q:v values")
    parser.add_argument("--workers", default=None, help="comma-separated worker counts [default: 1,all cores]")
    parser.add_argument("--repeats", type=int, default=2)
    return parser.parse_args()


def ffmpeg_alone(videos: list[Path], out: Path, workers: int, short_side: int, quality: int) -> float:
    """Seconds for ffmpeg to decode, scale and write every frame of ``videos`` as JPEG files."""
    threads = max(1, available_cores() // workers)

    def convert(video: Path) -> None:
        folder = out / video.stem
        folder.mkdir(parents=True, exist_ok=True)
        scale = ["-vf", f"scale=-2:{short_side}"] if short_side else []
        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-threads", str(threads),
                        "-i", str(video), *scale, "-fps_mode", "passthrough", "-pix_fmt", "yuv420p",
                        "-q:v", str(quality), "-f", "image2", str(folder / "%06d.jpg")], check=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(convert, videos))
    return time.perf_counter() - started


def sifar_shard(src: Path, video_list: Path, out: Path, workers: int,
                settings: DecodeSettings) -> tuple[float, float]:
    """Seconds for the whole shard job (read the list, decode, write tar shards and the manifest), and the
    shards' bytes per stored frame."""
    started = time.perf_counter()
    report = shard_dataset(ShardJob("csv", src, out, decode=settings, annotations=video_list, workers=workers,
                                    progress=False))
    seconds = time.perf_counter() - started
    if report.failures:
        raise RuntimeError(f"{len(report.failures)} videos failed: {report.failures[:3]}")
    manifest = report.manifest
    return seconds, sum(s.bytes for s in manifest.shards) / manifest.num_frames


def synthetic_videos(root: Path, count: int, size: str, frames: int) -> tuple[Path, list[Path], Path]:
    """(source folder, videos, a csv list of them) of ``count`` synthetic videos of ``size``."""
    width, height = (int(v) for v in size.split("x"))
    src = root / f"src-{size}"
    make_dataset(SynthConfig(out=src, videos=count, frames=frames, width=width, height=height, fps=25,
                             workers=available_cores()), progress=False)
    videos = sorted((src / "videos").rglob("*.mp4"))
    every_video = root / f"all-{size}.csv"
    every_video.write_text("".join(f"{v.relative_to(src)},{v.parent.name}\n" for v in videos))
    return src, videos, every_video


def main() -> None:
    args = parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")] if args.workers else sorted({1, available_cores()})
    cores = available_cores()
    print(f"ffmpeg: {ffmpeg_exe()}; {cores} cores; short side {args.short_side}; best of {args.repeats}")
    header = (f"{'input':>9} | {'q:v':>3} | {'workers':>7} | {'ffmpeg s':>8} | {'sifar s':>7} | {'frames/s':>8} | "
              f"{'frames/s/core':>13} | {'bytes/frame':>11} | {'ratio':>5}")
    with tempfile.TemporaryDirectory(prefix="bench_shard_") as tmp:
        root = Path(tmp)
        for size in args.sizes.split(","):
            src, videos, every_video = synthetic_videos(root, args.videos, size, args.frames)
            started = time.perf_counter()
            sifar_shard(src, every_video, root / f"warmup-{size}", 1, DecodeSettings(short_side=args.short_side))
            print(f"{len(videos)} synthetic videos {size}, {args.frames} frames each; first run incl. worker pool "
                  f"start: {time.perf_counter() - started:.2f} s")
            print(header)
            print("-" * len(header))
            for quality in (int(q) for q in args.qualities.split(",")):
                settings = DecodeSettings(short_side=args.short_side, quality=quality)
                for workers in worker_counts:
                    ffmpeg_times, runs = [], []
                    for repeat in range(args.repeats):
                        ffmpeg_times.append(ffmpeg_alone(videos, root / f"ffmpeg-{size}-{quality}-{workers}-{repeat}",
                                                         workers, args.short_side, quality))
                        runs.append(sifar_shard(src, every_video, root / f"sifar-{size}-{quality}-{workers}-{repeat}",
                                                workers, settings))
                    ffmpeg_s, (sifar_s, per_frame) = min(ffmpeg_times), min(runs)
                    rate = len(videos) * args.frames / sifar_s
                    print(f"{size:>9} | {quality:>3} | {workers:>7} | {ffmpeg_s:>8.2f} | {sifar_s:>7.2f} | "
                          f"{rate:>8.0f} | {rate / cores:>13.0f} | {per_frame:>11.0f} | {ffmpeg_s / sifar_s:>5.2f}")


if __name__ == "__main__":
    main()
