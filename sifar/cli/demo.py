"""``sifar-tools demo``: the whole pipeline on the embedded synthetic dataset, on a CPU, in a few minutes.

synth -> shard -> train a small SIFAR -> evaluate -> predict one video, printing where each result went.

The recipe is what learns these classes fastest on two CPU cores. The backbone is a ResNet-18 (CNN SIFAR,
paper Table 7): from scratch on this data a Swin sits at chance for its first ~1000 steps of 128 clips on a
GPU and ResNet-18 does not (docs/RESULTS.md). Frames are 32px, a quarter of the compute of 64px: learning
here is limited by optimizer steps.
Horizontal flips are off, because a flip turns move_right into move_left and rotate_cw into rotate_ccw.
Shards are small, so that each loader worker reads shards of its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from sifar.checkpoint import model_from_checkpoint
from sifar.data import build_loader
from sifar.data.ffmpeg import DecodeSettings
from sifar.data.formats.csv_list import read_pairs
from sifar.data.preview import find_sample, super_image
from sifar.data.shard_writer import ShardLimits
from sifar.data.sharding import ShardJob, shard_dataset
from sifar.data.synth import SynthConfig, make_dataset
from sifar.evaluate import evaluate, write_eval_report
from sifar.predict import predict
from sifar.train import TrainConfig, train


@click.command("demo")
@click.option("--out", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for everything the demo makes.")
@click.option("--videos", default=2000, show_default=True, help="Synthetic videos (80% train, 20% val).")
@click.option("--epochs", default=12, show_default=True, help="Training epochs.")
@click.option("--samples-per-shard", default=50, show_default=True, type=click.IntRange(min=1),
              help="Videos per shard: many small shards, so every loader worker reads its own.")
@click.option("--workers", default=2, show_default=True, help="Processes for decoding and loading.")
@click.option("--seed", default=0, show_default=True)
def demo_command(out: str, videos: int, epochs: int, samples_per_shard: int, workers: int, seed: int) -> None:
    """Run synth -> shard -> train (SIFAR-R18, 8 frames of 32px, 3x3) -> evaluate -> predict."""
    root = Path(out)
    began = time.perf_counter()
    synth = SynthConfig(out=root / "synth", videos=videos, frames=16, width=64, height=64, seed=seed,
                        workers=workers)
    _, val_list = make_dataset(synth, progress=True)
    shards = root / "shards"
    for split in ("train", "val"):
        shard_dataset(ShardJob(dataset="csv", src=synth.out, out=shards, split=split,
                               decode=DecodeSettings(short_side=0), limits=ShardLimits(max_samples=samples_per_shard),
                               workers=workers, seed=seed, progress=True))
    preview = root / "preview.png"
    super_image(find_sample(str(shards), "val", "0"), num_frames=8).save(preview)
    click.echo(f"super-image preview: {preview}")
    run = root / "run"
    train(TrainConfig(shards=str(shards), val_shards=str(shards), output=str(run), model="SIFAR-R18",
                      frame_size=32, epochs=epochs, warmup_epochs=1, batch_size=16, lr=1e-3, weight_decay=0.05,
                      mixup=0.0, cutmix=0.0, drop_path=0.0, flip="off", workers=workers, seed=seed,
                      save_every=10_000))
    model, classes = model_from_checkpoint(run / "best.pt")
    loader = build_loader(str(shards), split="val", num_frames=model.num_frames, frame_size=model.frame_size,
                          batch_size=16, num_workers=workers, crops=3)
    result = evaluate(model, loader, torch.device("cpu"), len(classes))
    paths = write_eval_report(result, classes, run / "eval", extra={"crops": 3})
    video, truth = read_pairs(val_list)[0]  # a held-out video
    prediction = predict(model, classes, synth.out / video, torch.device("cpu"), topk=3)
    minutes = (time.perf_counter() - began) / 60
    click.echo(f"\nvalidation top-1 {result.top1:.1f}% (chance {100 / len(classes):.0f}%), top-5 {result.top5:.1f}%, "
               f"on {result.num_samples} videos, 3 crops; {minutes:.1f} min in all")
    click.echo(f"curves: {run / 'curves.png'}\nconfusion matrix: {paths['confusion']}\nmetrics: {paths['report']}")
    click.echo(f"prediction for {synth.out / video} (a {truth} video): " + ", ".join(
        f"{c} {p:.0%}" for c, p in zip(prediction.classes, prediction.probabilities)))


COMMANDS = [demo_command]
