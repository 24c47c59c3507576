"""``sifar-tools demo``: the whole pipeline on the embedded synthetic dataset, on a CPU, in a few minutes.

synth -> shard -> train a small SIFAR -> evaluate -> predict one video, printing where each result went.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from sifar.checkpoint import model_from_checkpoint
from sifar.data import build_loader
from sifar.data.ffmpeg import DecodeSettings
from sifar.data.preview import find_sample, super_image
from sifar.data.sharding import ShardJob, shard_dataset
from sifar.data.synth import SynthConfig, make_dataset
from sifar.evaluate import evaluate, write_eval_report
from sifar.predict import predict
from sifar.train import TrainConfig, train


@click.command("demo")
@click.option("--out", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for everything the demo makes.")
@click.option("--videos", default=600, show_default=True, help="Synthetic videos (train + val).")
@click.option("--epochs", default=10, show_default=True, help="Training epochs.")
@click.option("--workers", default=2, show_default=True, help="Processes for decoding and loading.")
@click.option("--seed", default=0, show_default=True)
def demo_command(out: str, videos: int, epochs: int, workers: int, seed: int) -> None:
    """Run synth -> shard -> train (SIFAR-N-6, 8 frames of 64px, 3x3) -> evaluate -> predict."""
    root = Path(out)
    began = time.perf_counter()
    synth = SynthConfig(out=root / "synth", videos=videos, frames=16, width=64, height=64, seed=seed,
                        workers=workers)
    make_dataset(synth, progress=True)
    shards = root / "shards"
    for split in ("train", "val"):
        shard_dataset(ShardJob(dataset="csv", src=synth.out, out=shards, split=split,
                               decode=DecodeSettings(short_side=0),
                               workers=workers, seed=seed, progress=True))
    preview = root / "preview.png"
    super_image(find_sample(str(shards), "val", "0"), num_frames=8).save(preview)
    click.echo(f"super-image preview: {preview}")
    run = root / "run"
    train(TrainConfig(shards=str(shards), val_shards=str(shards), output=str(run), model="SIFAR-N-6",
                      epochs=epochs, warmup_epochs=1, batch_size=16, lr=1e-3, weight_decay=0.05, mixup=0.0,
                      cutmix=0.0, drop_path=0.0, workers=workers, seed=seed, save_every=10_000))
    model, classes = model_from_checkpoint(run / "best.pt")
    loader = build_loader(str(shards), split="val", num_frames=model.num_frames, frame_size=model.frame_size,
                          batch_size=16, num_workers=workers, crops=3)
    result = evaluate(model, loader, torch.device("cpu"), len(classes))
    paths = write_eval_report(result, classes, run / "eval", extra={"crops": 3})
    video = next((synth.out / "videos").rglob("*.mp4"))
    prediction = predict(model, classes, video, torch.device("cpu"), topk=3)
    minutes = (time.perf_counter() - began) / 60
    click.echo(f"\nvalidation top-1 {result.top1:.1f}% (chance {100 / len(classes):.0f}%), top-5 {result.top5:.1f}%, "
               f"on {result.num_samples} videos, 3 crops; {minutes:.1f} min in all")
    click.echo(f"curves: {run / 'curves.png'}\nconfusion matrix: {paths['confusion']}\nmetrics: {paths['report']}")
    click.echo(f"prediction for {video}: " + ", ".join(
        f"{c} {p:.0%}" for c, p in zip(prediction.classes, prediction.probabilities)))


COMMANDS = [demo_command]
