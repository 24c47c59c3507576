"""``sifar-tools demo``: the whole pipeline on the embedded synthetic dataset, on a CPU, in under five minutes.

synth -> shard -> train a small SIFAR -> evaluate -> predict one held-out video of each class, printing where
each result went.

The recipe is what learns these classes fastest on two CPU cores (sweeps in docs/RESULTS.md). The model is
``SIFAR-VGG-T``: a tiny VGG-style CNN over the 3x3 super image of 8 frames of 24 px, whose fully connected
head knows which frame each feature came from and whose depthwise 7x7 layer sees neighbouring frames at
once (:mod:`sifar.models.vgg`). From scratch, a Swin or a ResNet-18 needs several times more steps here
than two cores give in five minutes. Horizontal flips are off: a flip turns move_right into move_left and
rotate_cw into rotate_ccw. Shards are small, so that each loader worker reads shards of its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from sifar.data.clip import ClipSettings
from sifar.data.formats.csv_list import ListEntry, read_entries
from sifar.data.pipeline import LoaderSettings
from sifar.data.preview import find_sample, super_image
from sifar.data.sharding import shard_synthetic
from sifar.data.synth import SynthConfig, make_dataset
from sifar.evaluate import EvalResult, EvalSettings, check_coverage, evaluate_checkpoint
from sifar.predict import PredictSettings, Predictor
from sifar.train import train
from sifar.models.settings import ModelSettings
from sifar.train_config import OptimSettings, TrainConfig

BATCH_SIZE = 32


def one_video_per_class(entries: list[ListEntry]) -> list[ListEntry]:
    """The first listed video of each class, in the order classes first appear."""
    first: dict[str, ListEntry] = {}
    for entry in entries:
        first.setdefault(entry.label, entry)
    return list(first.values())


def print_accuracy(result: EvalResult, classes: list[str], minutes: float) -> None:
    click.echo(f"\nheld-out top-1 {result.top1:.1f}% (chance {100 / len(classes):.0f}%), top-5 {result.top5:.1f}%, "
               f"on {result.num_samples} videos, 3 crops; {minutes:.1f} min in all")
    click.echo("per class: " + ", ".join(f"{name} {accuracy:.0f}%" for name, accuracy
                                         in zip(classes, result.per_class()) if accuracy is not None))


@click.command("demo")
@click.option("--output", "out", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for everything the demo makes.")
@click.option("--videos", default=2000, show_default=True, type=click.IntRange(min=10),
              help="Synthetic videos (80% train, 20% held out).")
@click.option("--epochs", default=18, show_default=True, type=click.IntRange(min=1), help="Training epochs.")
@click.option("--samples-per-shard", default=50, show_default=True, type=click.IntRange(min=1),
              help="Videos per shard: many small shards, so every loader worker reads its own.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Processes for decoding and loading.")
@click.option("--seed", default=0, show_default=True)
def demo_command(out: str, videos: int, epochs: int, samples_per_shard: int, workers: int, seed: int) -> None:
    """Run synth -> shard -> train (SIFAR-VGG-T, 8 frames of 24 px, 3x3) -> evaluate -> predict."""
    root = Path(out)
    began = time.perf_counter()
    synth = SynthConfig(out=root / "synth", videos=videos, frames=16, width=64, height=64, seed=seed,
                        workers=workers)
    _, val_list = make_dataset(synth, progress=True)
    shards = root / "shards"
    shard_synthetic(synth.out, shards, samples_per_shard, workers, seed, progress=True)
    preview = root / "preview.png"
    super_image(find_sample(str(shards), "val", "0"), num_frames=8).save(preview)
    run = root / "run"
    train(TrainConfig(shards=str(shards), val_shards=str(shards), output=str(run), seed=seed, save_every=10_000,
                      channels_last=True, model=ModelSettings("SIFAR-VGG-T", drop_path=0.0),
                      clip=ClipSettings(flip="off"), loader=LoaderSettings(batch_size=BATCH_SIZE, workers=workers),
                      optim=OptimSettings(epochs=epochs, warmup_epochs=2, lr=2e-3, min_lr=2e-5, weight_decay=0.05,
                                          mixup=0.0, cutmix=0.0)))
    evaluation = evaluate_checkpoint(run / "last.pt", shards,
                                     EvalSettings(loader=LoaderSettings(batch_size=50, workers=workers)),
                                     torch.device("cpu"))
    result, classes = evaluation.results["normal"], evaluation.trained.classes
    check_coverage(evaluation.coverage, result.evaluated)
    paths = evaluation.write_reports(run / "eval")["normal"]
    print_accuracy(result, classes, (time.perf_counter() - began) / 60)
    click.echo("one held-out video of each class (true class -> top-2 predicted):")
    predictor = Predictor(evaluation.trained, "cpu", PredictSettings(topk=2))
    for entry in one_video_per_class(read_entries(val_list)):
        prediction = predictor.predict(synth.out / entry.video)
        verdict = "right" if prediction.classes[0] == entry.label else "WRONG"
        guesses = ", ".join(f"{c} {p:.0%}" for c, p in zip(prediction.classes, prediction.probabilities))
        click.echo(f"  {verdict}  {entry.label:<10} -> {guesses}  ({synth.out / entry.video})")
    click.echo(f"\nsuper-image preview: {preview}\ncurves: {run / 'curves.png'}\n"
               f"confusion matrix: {paths['confusion']}\nmetrics: {paths['report']}")
    click.echo(f"total {(time.perf_counter() - began) / 60:.1f} min")


COMMANDS = [demo_command]
