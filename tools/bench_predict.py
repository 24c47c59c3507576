"""Reading a video for prediction: only the sampled frames against decoding the whole video, side by side.

    python -m tools.bench_predict [--video FILE] [--seconds 60] [--size 1280x720] [--gop 250] [--rounds 3]

Without ``--video`` it encodes ``--seconds`` of ffmpeg's moving test pattern at ``--size`` and 30 fps
(H.264, a keyframe every ``--gop`` frames at most: 250 is x264's default, streaming sites use about 2 s).
Each way runs in a fresh Python process, ``--rounds`` times alternately; the table gives the
median wall time and how far the process's peak resident memory rose above what it held before reading
(Linux: the peak is reset through /proc/self/clear_refs after the imports; ffmpeg's own memory is not in it:
a forked child's peak counts its parent's pages):

- ``whole video``: how ``sifar-predict`` read a video before: every frame decoded, scaled and encoded to
  JPEG in memory by ffmpeg (:func:`sifar.data.ffmpeg.decode_video`, the sharding path), then the sampled
  ones decoded back;
- ``sampled frames``: :func:`sifar.predict.video_views`: the packets listed, then each sampled frame reached
  by seeking to its keyframe and decoding from there (:mod:`sifar.data.video_frames`), output raw.

Both give the views of one clip (8 frames, 224 px, 3 crops) of the checkpoint-free default clip.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from sifar.data.ffmpeg import ffmpeg_exe

READERS = {
    "whole video": """
from sifar.data.decoders import JpegDecoder
from sifar.data.ffmpeg import DecodeSettings, decode_video
from sifar.data.sampling import eval_indices
from sifar.data.transforms import eval_transform
decoded = decode_video(VIDEO, DecodeSettings(short_side=224))
indices = eval_indices(len(decoded.frames), 8, 1, "uniform")[0]
views = eval_transform(JpegDecoder().frames(dict(enumerate(decoded.frames)), indices), 224, 3)
""",
    "sampled frames": """
from sifar.data.clip import ClipSettings
from sifar.predict import video_views
views = video_views(VIDEO, ClipSettings(8, 224), 1, 3)
""",
}
MEASURE = """
import json, re, sys, time
import sifar.data.decoders, sifar.data.ffmpeg, sifar.predict  # the same imports before either way reads
VIDEO = sys.argv[1]
def status_mib(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from what is resident now
before = status_mib("VmRSS")
began = time.perf_counter()
{reader}
seconds = time.perf_counter() - began
print(json.dumps({{"seconds": seconds, "shape": list(views.shape), "rise_mib": status_mib("VmHWM") - before}}))
"""


def make_video(path: Path, seconds: float, size: str, gop: int) -> Path:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=30", "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast",
                    "-g", str(gop), "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def measure(reader: str, video: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE.format(reader=reader), str(video)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--gop", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    video = args.video or make_video(Path(tempfile.mkdtemp()) / "video.mp4", args.seconds, args.size, args.gop)
    runs: dict[str, list[dict]] = {name: [] for name in READERS}
    for _ in range(args.rounds):
        for name, reader in READERS.items():
            runs[name].append(measure(reader, video))
    print(f"{video} ({video.stat().st_size / 2**20:.1f} MiB), median of {args.rounds} runs each")
    print("| reader | seconds | peak memory rise, MiB | x whole video (time) |")
    print("|---|---|---|---|")
    base = statistics.median(r["seconds"] for r in runs["whole video"])
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        rise = statistics.median(r["rise_mib"] for r in results)
        print(f"| {name} | {seconds:.2f} | {rise:.1f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
