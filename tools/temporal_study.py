"""Issues 8 and 28: evidence that super images learn time, on the synthetic temporal dataset (paper Tables
7, 8a, 8b, 9), separated by seeds and a held-out set large enough to resolve a point.

The synthetic dataset's ten classes come in five direction pairs (right/left, down/up, grow/shrink,
cw/ccw, appear/disappear); a twin is its partner played backwards, so only frame order separates a pair.
One run makes the data (``sifar-tools synth`` + ``shard``: 13,000 videos, 5,200 held out), then trains each
(row, seed) from scratch with the library's trainer (``sifar.train.train``, what ``sifar-train`` runs) on the
training split held on the GPU (``--resident``), several at once (``--parallel``, each a child process), and
evaluates the last checkpoint the way ``sifar-eval`` does (``sifar.evaluate.evaluate_checkpoint``, streamed),
in normal, reversed and shuffled frame order where the row asks for it. The rows
(:mod:`tools.temporal_rows`):

1. SIFAR (a micro Swin with SIFAR-B-12's windows, 3x3 layout), also with reversed and shuffled frames
   (Table 9);
2. the same backbone as a frame-averaging baseline (TSN-style; ``frame_average=True``);
3. layouts 1x8 and 2x4 beside 3x3 (Table 8a), and 16 frames of 32 px as 4x4 against 2x8;
4. the 3x3 model with the per-frame embedding (Table 8b);
5. CNN SIFAR: ResNet-18 with and without a 7x7 large-kernel block (Table 7).

Every run reports top-1, top-5, motion accuracy (the pair named right), direction accuracy within the
pair (chance 50%), the held-out count, training time and clips/s. ``<out>/results.json`` is rewritten after
every run (runs of an earlier study with the same recipe are kept, so ``--runs`` can complete a cut-off
one), and so are the study's section of ``<docs>/RESULTS.md`` (means over seeds, the paper's claims with
two standard errors), ``<docs>/results.json`` and ``<docs>/temporal_study.png``.

    python -m tools.temporal_study --output runs/temporal --docs docs --seeds 0,1,2 --parallel 6   # one GPU
    python -m tools.temporal_study --output runs/temporal --docs docs --runs sifar_3x3@0,resnet@0   # chosen runs
    python -m tools.temporal_study --quick --output /tmp/ts_quick --docs /tmp/ts_docs --device cpu  # smoke test
    python -m tools.temporal_report --output runs/temporal --docs docs       # docs from results.json
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click
import torch

from sifar.data.clip import ClipSettings, ViewSettings
from sifar.data.pipeline import LoaderSettings
from sifar.data.sharding import shard_synthetic
from sifar.data.synth import CLASSES as SYNTH_CLASSES
from sifar.data.synth import SynthConfig, make_dataset
from sifar.data.workers import available_cores
from sifar.evaluate import EvalResult, EvalSettings, evaluate_checkpoint
from sifar.cam import METHODS
from sifar.cli.options import comma_items
from sifar.distributed import init_distributed, local_device
from sifar.io import write_json
from sifar.metrics_log import read_metrics
from sifar.models.settings import ModelSettings
from sifar.train import train
from sifar.train_config import OptimSettings, TrainConfig
from tools.cam_study import score_checkpoint
from tools.temporal_report import percent, write_report
from tools.temporal_rows import ROW_NAMES, ROWS, ROWS_BY_NAME, RowSpec



@dataclass(frozen=True)
class StudySettings:
    """The recipe: data and training settings every row shares (results are only merged when they match)."""

    videos: int = 13000
    val_fraction: float = 0.4  # 5200 held-out clips: a 1-point difference is outside two standard errors
    frames_per_video: int = 16
    frame_size: int = 64
    shard_samples: int = 64  # many small shards: every loader worker draws different ones
    swin_model: str = "SIFAR-M-12"
    cnn_model: str = "SIFAR-R18"
    cnn_large_kernel_model: str = "SIFAR-R18-C7"
    epochs: int = 7  # few, long epochs: each one restarts the loader's worker processes
    steps_per_epoch: int = 500
    batch_size: int = 128
    # Swin from scratch stays at chance for 3000 steps at 1e-3 (and 3e-4 for 700), whatever the windows or
    # batch; at the paper's 1e-4 it takes off after ~1000 steps. The ResNet learns fastest at 1e-3.
    swin_lr: float = 1e-4
    cnn_lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    drop_path: float = 0.1
    clip_grad: float = 5.0
    resident: bool = True  # the training split decoded once onto the GPU: runs in parallel are not CPU-bound
    cam_clips: int = 520  # held-out clips whose maps the pointing game scores (rows with cam=True)
    # the stages whose maps it scores: the last (the paper's: 2x2 positions a 64-px frame), stride 8 (8x8) and 4
    cam_stages: tuple[int, ...] = (-1, 1, 0)
    seed: int = 0  # the data's; each run's training seed is its own (--seeds)

    def lr(self, backbone: str) -> float:
        return self.swin_lr if backbone == "swin" else self.cnn_lr

    def model(self, backbone: str) -> str:
        models = {"swin": self.swin_model, "cnn": self.cnn_model, "cnn_large_kernel": self.cnn_large_kernel_model}
        return models[backbone]


GPU_SETTINGS = StudySettings()
QUICK_SETTINGS = dataclasses.replace(GPU_SETTINGS, videos=40, frame_size=32, shard_samples=8, swin_model="SIFAR-N-6",
                                     epochs=1, steps_per_epoch=2, batch_size=8)


@dataclass(frozen=True)
class RunOptions:
    """How this invocation runs (not part of the recipe)."""

    device: str
    workers: int


# --- data ------------------------------------------------------------------------------------------------


def make_data(settings: StudySettings, root: Path) -> dict[str, Any]:
    """Synthetic videos and their shards in ``root``; reused when ``root/data.json`` records the same recipe."""
    recipe = {"videos": settings.videos, "val_fraction": settings.val_fraction, "frames": settings.frames_per_video,
              "size": settings.frame_size, "shard_samples": settings.shard_samples, "seed": settings.seed}
    record = root / "data.json"
    if record.is_file() and json.loads(record.read_text())["recipe"] == recipe:
        return {**json.loads(record.read_text()), "reused": True}
    began = time.perf_counter()
    synth = SynthConfig(out=root / "synth", videos=settings.videos, frames=settings.frames_per_video,
                        width=settings.frame_size, height=settings.frame_size, seed=settings.seed,
                        val_fraction=settings.val_fraction)
    make_dataset(synth, progress=False)
    synth_s = time.perf_counter() - began
    shutil.rmtree(root / "shards", ignore_errors=True)
    reports = shard_synthetic(synth.out, root / "shards", settings.shard_samples, seed=settings.seed)
    data = {"recipe": recipe, "shards": str(root / "shards"), "synth_s": round(synth_s, 1),
            "shard_s": round(time.perf_counter() - began - synth_s, 1),
            **{f"{r.manifest.split}_videos": r.manifest.num_samples for r in reports}}
    write_json(record, data)
    return data


# --- one row ---------------------------------------------------------------------------------------------


def train_config(row: RowSpec, seed: int, settings: StudySettings, shards: str, output: Path,
                 run: RunOptions) -> TrainConfig:
    """The row's trainer settings: the shared recipe, no mixing augmentations and no flips (a horizontal flip
    turns move_right into move_left and rotate_cw into rotate_ccw), no validation during training."""
    return TrainConfig(
        shards=shards, output=str(output), steps_per_epoch=settings.steps_per_epoch, device=run.device,
        seed=seed, save_every=10**9, resume="off", precision=row.precision, gelu_epilogue=row.gelu_epilogue,
        model=ModelSettings(settings.model(row.backbone), frame_average=row.frame_average,
                            frame_embed=row.frame_embed, drop_path=settings.drop_path),
        clip=ClipSettings(num_frames=row.num_frames, frame_size=row.frame_size or settings.frame_size,
                          layout=row.layout, flip="off"),
        loader=LoaderSettings(batch_size=settings.batch_size, workers=run.workers, resident=settings.resident),
        optim=OptimSettings(epochs=settings.epochs * row.schedule, warmup_epochs=settings.warmup_epochs,
                            lr=settings.lr(row.backbone), min_lr=settings.min_lr, weight_decay=settings.weight_decay,
                            clip_grad=settings.clip_grad, mixup=0.0, cutmix=0.0),
    )


def run_row(row: RowSpec, seed: int, settings: StudySettings, shards: str, output: Path,
            run: RunOptions) -> dict[str, Any]:
    """Train the row from scratch with ``seed``, then evaluate its last checkpoint in each of its frame orders."""
    shutil.rmtree(output, ignore_errors=True)  # the metrics log appends: start clean
    began = time.perf_counter()
    summary = train(train_config(row, seed, settings, shards, output, run))
    train_s = time.perf_counter() - began
    clips = summary["steps"] * settings.batch_size
    return {
        "row": row.name, "seed": seed, "title": row.title, "model": settings.model(row.backbone),
        "layout": "1x1 per frame" if row.frame_average else row.layout, "frame_average": row.frame_average,
        "frame_embed": row.frame_embed, "num_frames": row.num_frames, "precision": row.precision,
        "gelu_epilogue": row.gelu_epilogue, "frame_size": row.frame_size or settings.frame_size,
        "steps": summary["steps"], "clips_seen": clips, "train_s": round(train_s, 1),
        "train_clips_per_s": round(clips / train_s, 1), **epoch_throughput(output),
        **evaluate_orders(output / "last.pt", shards, row.orders, seed, settings, run),
        **({"pointing": pointing(output, shards, settings, run)} if row.cam else {}),
    }


def pointing(output: Path, shards: str, settings: StudySettings, run: RunOptions) -> dict[str, Any]:
    """The pointing game of the run's last checkpoint (``tools.cam_study``, its files in ``<run>/cam``): at each
    of ``settings.cam_stages``, each method's accuracy and the random baseline, in percent of the frames counted."""
    found = score_checkpoint(output / "last.pt", shards, settings.cam_clips, METHODS, local_device(run.device), 64,
                             output / "cam", settings.cam_stages)
    return pointing_summary(found)


def pointing_summary(found: dict[str, Any]) -> dict[str, Any]:
    """What results.json keeps of a ``tools.cam_study`` result: per stage, each method's scores overall."""
    keys = ("pointing_accuracy", "random_baseline", "frames_counted")
    return {"clips": found["clips"], "device": found["device"], "command": found["command"],
            "stages": {stage: {"positions_per_frame": scored["positions_per_frame"],
                               **{method: {key: scores[key] for key in keys}
                                  for method, scores in scored["methods"].items()}}
                       for stage, scored in found["stages"].items()}}


def epoch_throughput(output: Path) -> dict[str, float]:
    """Median over epochs of the trainer's own clips/s and loader-wait share, and the final training loss (loss
    curves are compared from the runs' metrics.jsonl: tools/loss_curves.py)."""
    steps = [r for r in read_metrics(output / "metrics.jsonl") if r["kind"] == "step"]
    last_of_epoch = list({r["epoch"]: r for r in steps}.values())  # each epoch's last step: its average

    def median(key: str) -> float:
        return statistics.median(r[key] for r in last_of_epoch)

    return {"epoch_clips_per_s": round(median("clips_per_s"), 1), "data_wait": round(median("data_wait"), 3),
            "final_loss": round(steps[-1]["loss"], 4)}


def evaluate_orders(checkpoint: Path, shards: str, orders: tuple[str, ...], seed: int, settings: StudySettings,
                    run: RunOptions) -> dict[str, Any]:
    """sifar-eval's path (one centre crop, one clip: the frames are square) for each frame order."""
    device = init_distributed(run.device).device
    loader = LoaderSettings(batch_size=settings.batch_size, workers=run.workers)
    one_view = EvalSettings(views=ViewSettings(crops=1), loader=loader)
    evaluation = evaluate_checkpoint(checkpoint, shards, one_view, device, orders=orders, seed=seed)
    evaluation.write_reports(checkpoint.parent / "eval")
    classes = evaluation.trained.classes
    results = {order: {**result.summary(), **pair_metrics(result, classes),
                       "clips_per_s": round(result.videos_per_s, 1)}  # after each pass's first batch
               for order, result in evaluation.results.items()}
    params = sum(p.numel() for p in evaluation.trained.model.parameters())
    held_out = evaluation.results["normal"].evaluated
    return {"params_m": round(params / 1e6, 2), "held_out": held_out, "orders": results, "device": device_name(device)}


def classes_by_motion(classes: list[str]) -> dict[str, list[int]]:
    """Motion -> indices of its classes (a direction pair: the class and its time-reversed twin)."""
    by_motion: dict[str, list[int]] = {}
    for index, name in enumerate(classes):
        by_motion.setdefault(SYNTH_CLASSES[name][0], []).append(index)
    return by_motion


def pair_metrics(result: EvalResult, classes: list[str]) -> dict[str, Any]:
    """Motion top-1 (the prediction is the true class or its twin) and direction accuracy within the pair,
    overall and per motion (which pair limits the top-1)."""
    confusion = result.confusion.double()
    by_motion = classes_by_motion(classes)

    def metrics(pairs: list[list[int]]) -> dict[str, float | None]:
        block = sum(float(confusion[pair][:, pair].sum()) for pair in pairs)  # true class and prediction in a pair
        correct = sum(float(confusion[i, i]) for pair in pairs for i in pair)
        total = sum(float(confusion[pair].sum()) for pair in pairs)
        return {"motion_top1": round(100 * block / max(total, 1), 2),
                "direction_in_pair": round(100 * correct / block, 2) if block else None}

    return {**metrics(list(by_motion.values())),
            "per_motion": {motion: metrics([pair]) for motion, pair in by_motion.items()}}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()})"


# --- results ---------------------------------------------------------------------------------------------


def start_results(path: Path, settings: StudySettings, command: str) -> dict[str, Any]:
    """This run's results, keeping the runs of an earlier study in ``path`` made with the same recipe."""
    recipe = json.loads(json.dumps(dataclasses.asdict(settings)))
    earlier = json.loads(path.read_text()) if path.is_file() else None
    if earlier is not None and earlier["settings"] == recipe:
        earlier["commands"].append(command)
        return earlier
    return {"settings": recipe, "commands": [command], "runs": {}}


# --- runs: (row, seed) pairs, each in a process of its own ------------------------------------------------


@dataclass(frozen=True)
class Job:
    row: RowSpec
    seed: int

    @property
    def name(self) -> str:
        return f"{self.row.name}@{self.seed}"

    def output(self, out: Path) -> Path:
        return out / "runs" / f"{self.row.name}-s{self.seed}"


def parse_job(text: str) -> Job:
    name, _, seed = text.partition("@")
    if name not in ROWS_BY_NAME or not seed.isdigit():
        raise click.BadParameter(f"{text!r}: ROW@SEED with a row of {', '.join(ROW_NAMES)}", param_hint="--job")
    return Job(ROWS_BY_NAME[name], int(seed))


def planned_jobs(rows: list[RowSpec], seeds: list[int]) -> list[Job]:
    """Seed-major (every row's first seed before any row's second), each row with at most its seeds."""
    return [Job(row, seed) for number, seed in enumerate(seeds) for row in rows
            if row.seeds is None or number < row.seeds]


def failed_run(job: Job, error: str) -> dict[str, Any]:
    return {"row": job.row.name, "seed": job.seed, "title": job.row.title, "error": error}


def run_job(job: Job, settings: StudySettings, shards: str, out: Path, run: RunOptions) -> dict[str, Any]:
    """One run's results, or its error: a failing run must not cost the others of a one-shot GPU session."""
    try:
        return run_row(job.row, job.seed, settings, shards, job.output(out), run)
    except Exception:  # noqa: BLE001 - recorded in results.json and the report, printed in full here
        traceback.print_exc()
        return failed_run(job, traceback.format_exc())


def job_command(job: Job, out: Path, quick: bool, epochs: int | None, device: str, workers: int) -> list[str]:
    command = [sys.executable, "-m", "tools.temporal_study", "--output", str(out), "--job", job.name,
               "--device", device, "--workers", str(workers)]
    return command + (["--quick"] if quick else []) + (["--epochs", str(epochs)] if epochs is not None else [])


def run_jobs(jobs: list[Job], parallel: int, command_for: Callable[[Job], list[str]], out: Path,
             on_done: Callable[[Job, dict[str, Any], float], None], deadline: float | None, started: float) -> None:
    """Run ``jobs`` as child processes, ``parallel`` at a time, in order; none starts once the deadline would
    be overrun by the slowest job so far (each child's output goes to ``<run folder>.log`` beside its folder)."""
    pending, running, seconds = list(jobs), {}, []
    while pending or running:
        while pending and len(running) < parallel:
            elapsed = time.perf_counter() - started
            if deadline is not None and seconds and elapsed + max(seconds) > deadline:
                log(started, f"not starting {', '.join(j.name for j in pending)}: the slowest run took "
                             f"{max(seconds):.0f} s and the deadline is {deadline:.0f} s")
                pending = []
                break
            job = pending.pop(0)
            folder = job.output(out)
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder.with_name(f"{folder.name}.log"), "w") as job_log:
                process = subprocess.Popen(command_for(job), stdout=job_log, stderr=subprocess.STDOUT)
            running[process] = (job, time.perf_counter())
            log(started, f"[{job.name}] started ({len(running)} running)")
        time.sleep(1)
        for process in [p for p in running if p.poll() is not None]:
            job, began = running.pop(process)
            seconds.append(time.perf_counter() - began)
            result_file = job.output(out) / "result.json"
            if process.returncode == 0 and result_file.is_file():
                result = json.loads(result_file.read_text())
            else:
                result = failed_run(job, f"exit status {process.returncode}; see {job.output(out)}.log")
            on_done(job, result, seconds[-1])


# --- report ----------------------------------------------------------------------------------------------


def run_line(run: dict[str, Any]) -> str:
    if "error" in run:
        return f"FAILED: {run['error'].splitlines()[-1]}"
    orders = run["orders"]
    others = "".join(f" | {o} {orders[o]['top1']:.1f}" for o in orders if o != "normal")
    normal = orders["normal"]
    return (f"top-1 {normal['top1']:.1f} top-5 {normal['top5']:.1f} motion {normal['motion_top1']:.1f} "
            f"direction {percent(normal['direction_in_pair'])}{others} | train {run['train_s']:.0f} s, "
            f"{run['epoch_clips_per_s']:.0f} clips/s (loader wait {100 * run['data_wait']:.0f}%), "
            f"eval {normal['clips_per_s']:.0f} clips/s")


def selected_rows(names: str | None) -> list[RowSpec]:
    if not names:
        return list(ROWS)
    wanted = comma_items(names)
    unknown = [n for n in wanted if n not in ROW_NAMES]
    if unknown:
        raise click.BadParameter(f"unknown rows {unknown}; rows are {', '.join(ROW_NAMES)}", param_hint="--rows")
    return [ROWS_BY_NAME[name] for name in wanted]


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in comma_items(text)]
    except ValueError:
        raise click.BadParameter(f"{text!r}: comma-separated integers", param_hint="--seeds") from None
    if not seeds:
        raise click.BadParameter("at least one seed", param_hint="--seeds")
    return list(dict.fromkeys(seeds))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Work folder: data, runs, results.json.")
@click.option("--docs", default="docs", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where RESULTS.md (the study's section), results.json and temporal_study.png go.")
@click.option("--quick", is_flag=True, help="Tiny CPU settings: a smoke test of the whole study in minutes.")
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--workers", type=int, default=None,
              help="Loader workers per run (default: (cores - 2) / --parallel on GPU, 2 on CPU).")
@click.option("--rows", default=None, help=f"Comma-separated subset of: {', '.join(ROW_NAMES)} (run in that order).")
@click.option("--seeds", default="0", show_default=True, help="Training seeds, comma-separated: each row is trained "
                                                              "once per seed (up to its own limit).")
@click.option("--parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs at once, each a process of its own (they share the GPU).")
@click.option("--deadline", type=float, default=None,
              help="Seconds from start after which no new run starts (when the slowest run's time would overrun).")
@click.option("--runs", default=None, help="Comma-separated ROW@SEED runs, in the order to start them (instead of "
                                            "--rows x --seeds).")
@click.option("--job", default=None, help="ROW@SEED: train and evaluate this one run into its folder and stop "
                                           "(what the study starts for each run).")
def main(out: Path, docs: Path, quick: bool, epochs: int | None, device: str, workers: int | None,
         rows: str | None, seeds: str, parallel: int, deadline: float | None, runs: str | None,
         job: str | None) -> None:
    """Train and evaluate the study's runs; results.json, RESULTS.md and the PNG are rewritten after each run."""
    started = time.perf_counter()
    settings = QUICK_SETTINGS if quick else GPU_SETTINGS
    if epochs is not None:
        settings = dataclasses.replace(settings, epochs=epochs)
    workers = workers if workers is not None else default_workers(device, parallel)
    data_root = out / "data"
    if job is not None:  # a child: the data exists
        one = parse_job(job)
        torch.backends.cudnn.benchmark = True  # fixed input shapes
        data = json.loads((data_root / "data.json").read_text())
        write_json(one.output(out) / "result.json",
                   run_job(one, settings, data["shards"], out, RunOptions(device=device, workers=workers)))
        return
    results_path = out / "results.json"
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m tools.temporal_study " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    results = start_results(results_path, settings, command)
    results.update(quick=quick, cpu_cores=available_cores(), torch=torch.__version__)
    data = results["data"] = make_data(settings, data_root)
    log(started, f"data{' (reused)' if data.get('reused') else ''}: {settings.videos} videos, "
                 f"{data['train_videos']} train / {data['val_videos']} val, synth {data['synth_s']} s, "
                 f"shard {data['shard_s']} s")
    if runs:
        jobs = [parse_job(text) for text in comma_items(runs)]
    else:
        jobs = planned_jobs(selected_rows(rows), seed_list(seeds))

    def record(done: Job, result: dict[str, Any], seconds: float) -> None:
        results["runs"][done.name] = result
        write_json(results_path, results)
        write_report(results, docs)
        log(started, f"[{done.name}] {run_line(result)} ({seconds:.0f} s)")

    run_jobs(jobs, parallel, lambda j: job_command(j, out, quick, epochs, device, workers), out, record, deadline,
             started)
    log(started, f"results: {results_path}; report: {docs / 'RESULTS.md'}, {docs / 'temporal_study.png'}")


def default_workers(device: str, parallel: int) -> int:
    """Loader workers per run (evaluation; resident training needs none): the cores but two shared by the runs
    on a GPU machine (the trainers need some)."""
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())  # creates no context
    return max(1, (available_cores() - 2) // parallel) if on_gpu else min(2, available_cores())


def log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)


if __name__ == "__main__":
    main()
