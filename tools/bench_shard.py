"""Benchmark ``sifar-tools shard`` against ffmpeg alone decoding and re-encoding the same videos to JPEG files.

Both sides run side by side in one process on the same synthetic videos, with the same number of parallel
ffmpeg processes and decoder threads; each is timed ``--repeats`` times and the best run counts. The ratio
is ffmpeg's time over ours (goal: >= 0.8, i.e. the shard tool costs at most 25% more than ffmpeg's own
decode-and-encode). The one-time start of the worker pool is measured and shown apart.

    python -m tools.bench_shard --videos 24 --size 426x240 --workers 1,2
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
    parser.add_argument("--size", default="426x240", help="WxH of the synthetic videos")
    parser.add_argument("--frames", type=int, default=48, help="frames per video")
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--quality", type=int, default=DecodeSettings.quality)
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


def sifar_shard(src: Path, video_list: Path, out: Path, workers: int, settings: DecodeSettings) -> float:
    """Seconds for the whole shard job (read the list, decode, write tar shards and the manifest)."""
    started = time.perf_counter()
    report = shard_dataset(ShardJob("csv", src, out, decode=settings, annotations=video_list, workers=workers,
                                    progress=False))
    if report.failures:
        raise RuntimeError(f"{len(report.failures)} videos failed: {report.failures[:3]}")
    return time.perf_counter() - started


def main() -> None:
    args = parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    worker_counts = [int(w) for w in args.workers.split(",")] if args.workers else sorted({1, available_cores()})
    settings = DecodeSettings(short_side=args.short_side, quality=args.quality)
    with tempfile.TemporaryDirectory(prefix="bench_shard_") as tmp:
        root = Path(tmp)
        make_dataset(SynthConfig(out=root / "src", videos=args.videos, frames=args.frames, width=width,
                                 height=height, fps=25, workers=available_cores()), progress=False)
        videos = sorted((root / "src" / "videos").rglob("*.mp4"))
        every_video = root / "all.csv"
        every_video.write_text("".join(f"{v.relative_to(root / 'src')},{v.parent.name}\n" for v in videos))

        started = time.perf_counter()
        sifar_shard(root / "src", every_video, root / "warmup", 1, settings)
        startup = time.perf_counter() - started

        print(f"ffmpeg: {ffmpeg_exe()}")
        print(f"{len(videos)} synthetic videos, {width}x{height}, {args.frames} frames each, "
              f"short side {args.short_side}, -q:v {args.quality}; best of {args.repeats}; "
              f"{available_cores()} cores; first run incl. worker pool start: {startup:.2f} s")
        header = f"{'workers':>7} | {'ffmpeg s':>8} | {'ffmpeg vid/s':>12} | {'sifar s':>7} | {'sifar vid/s':>11} " \
                 f"| {'vid/s/worker':>12} | {'frames/s':>8} | {'ratio':>5}"
        print(header)
        print("-" * len(header))
        for workers in worker_counts:
            ffmpeg_times, sifar_times = [], []
            for repeat in range(args.repeats):
                ffmpeg_times.append(ffmpeg_alone(videos, root / f"ffmpeg-{workers}-{repeat}", workers,
                                                 args.short_side, args.quality))
                sifar_times.append(sifar_shard(root / "src", every_video, root / f"sifar-{workers}-{repeat}", workers,
                                               settings))
            ffmpeg_s, sifar_s = min(ffmpeg_times), min(sifar_times)
            rate = len(videos) / sifar_s
            print(f"{workers:>7} | {ffmpeg_s:>8.2f} | {len(videos) / ffmpeg_s:>12.1f} | {sifar_s:>7.2f} | "
                  f"{rate:>11.1f} | {rate / workers:>12.1f} | {len(videos) * args.frames / sifar_s:>8.0f} | "
                  f"{ffmpeg_s / sifar_s:>5.2f}")


if __name__ == "__main__":
    main()
