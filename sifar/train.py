"""The SIFAR trainer, top to bottom: model checks, optimisation, the loop. ``sifar-train`` runs it (under
``torchrun --no-python`` for several processes); its settings are :class:`sifar.train_config.TrainConfig`,
its checkpoints and resume :mod:`sifar.resume`.

The paper's recipe is the default: AdamW (weight decay 0.05, none on norms, biases, position embeddings
and relative-position tables), LR 1e-4 unscaled, cosine schedule with 5 warm-up epochs, 30 epochs, drop
path 0.1, label smoothing 0.1, Mixup 0.8 / CutMix 1.0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from sifar.checkpoint import save_checkpoint, set_rng_state
from sifar.config_fields import ConfigError
from sifar.data import build_loader
from sifar.data.mixup import VideoMixup
from sifar.data.transforms import device_clips
from sifar.distributed import DistInfo, barrier, cleanup, init_distributed
from sifar.evaluate import (Coverage, EvalResult, check_same_classes, evaluate, evaluation_coverage,
                            write_eval_report)
from sifar.io import write_json
from sifar.metrics_log import MetricsLog
from sifar.data.clip import ClipSettings
from sifar.models import SuperImageClassifier, compile_model, resolve_config
from sifar.models.float8 import FP8_NON_FINITE_ADVICE, check_float8, convert_to_float8
from sifar.models.gelu_epilogue_training import check_training_gelu_epilogue, use_training_gelu_epilogue
from sifar.models.settings import build_model, resolve_clip
from sifar.precision import allow_tf32, autocast_for, describe_precision, grad_scaler
from sifar.resume import RunSetup, TrainState, checkpoint_state, remove_unfinished_checkpoints, restore
from sifar.run_lock import run_lock
from sifar.train_config import LR_REFERENCE_BATCH, OptimSettings, TrainConfig

class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops and the last good checkpoint is kept."""


# Model checks that must happen before any work ----------------------------------------------------------

def resolve_num_classes(config: TrainConfig, manifest_classes: int | None) -> int:
    """The manifest is the truth; a --num-classes that disagrees with it is an error, not a silent choice."""
    wanted = config.model.num_classes
    if manifest_classes is None and wanted is None:
        raise ValueError(f"{config.shards} has no manifest: pass --num-classes")
    if manifest_classes is not None and wanted not in (None, manifest_classes):
        raise ValueError(f"--num-classes {wanted} disagrees with the manifest of {config.shards}, "
                         f"which lists {manifest_classes} classes")
    return manifest_classes or wanted


def resolved_clip(config: TrainConfig) -> ClipSettings:
    """The run's clip with its frames, size and layout given, checked to fit the model before any data is
    read (ConfigError naming the option): the model is built and run on the meta device, which allocates
    nothing, so a frame size its patches and windows do not divide, frames its layout cannot hold or an
    option its family refuses are found at once."""
    try:
        clip = resolve_clip(config.model, config.clip)
        with torch.device("meta"):
            # sdpa: the attention kernel changes no shape, and FlexAttention (auto's choice on a GPU) has no
            # meta-device kernel
            model = build_model(config.model, clip, num_classes=2, load_weights=False, attention="sdpa")
            model(torch.empty(1, clip.num_frames, 3, clip.frame_size, clip.frame_size))
    except Exception as err:  # noqa: BLE001 - whatever the model's layers raise for a shape they cannot take
        if isinstance(err, KeyError):  # an unknown model name (the message lists the known ones)
            raise ConfigError(f"model: {err.args[0]}") from None
        known, asked = resolve_config(config.model.name), config.clip
        why = str(err).strip().splitlines()[-1].strip()
        raise ConfigError(f"model: {config.model.name} cannot take {asked.num_frames or known.num_frames} frames of "
                          f"{asked.frame_size or known.frame_size} px (layout {asked.layout or 'by the paper rule'})"
                          f": {why}") from None
    return clip


def resume_checkpoint(config: TrainConfig, output: Path) -> Path | None:
    """The checkpoint a run continues from: ``<output>/last.pt`` when it exists (``auto``), the path given,
    or none (``off``); a path given that holds no file is an error naming it."""
    if config.resume == "off":
        return None
    if config.resume == "auto":
        last = output / "last.pt"
        return last if last.exists() else None
    path = Path(config.resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: no checkpoint there (auto resumes from <output>/last.pt)")
    return path


def prepare_output(folder: str) -> Path:
    """Create the output folder and prove it is writable now, not after an hour of training."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"  # one per process: ranks share the folder
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"output folder {path} is not writable: {err.strerror or err}") from err
    return path


# Optimisation ---------------------------------------------------------------------------------------------

def effective_lr(optim: OptimSettings, batch_size: int, world_size: int) -> float:
    if not optim.scale_lr:
        return optim.lr
    return optim.lr * batch_size * optim.accum_steps * world_size / LR_REFERENCE_BATCH


def build_optimizer(model: nn.Module, config: OptimSettings, lr: float, device: torch.device):
    # timm's param groups put 1-D parameters (norms, biases) and model.no_weight_decay() (relative-position
    # tables, frame embedding) in a group without weight decay.
    extra = {"fused": True} if device.type == "cuda" else {}
    return create_optimizer_v2(model, "adamw", lr=lr, weight_decay=config.weight_decay, **extra)


def build_scheduler(optimizer, config: OptimSettings, updates_per_epoch: int) -> CosineLRScheduler:
    return CosineLRScheduler(
        optimizer, t_initial=max(1, config.epochs * updates_per_epoch), lr_min=config.min_lr,
        warmup_t=round(config.warmup_epochs * updates_per_epoch), warmup_lr_init=config.warmup_lr,
        warmup_prefix=True, t_in_epochs=False,
    )


def build_criterion(config: OptimSettings, mixing: bool) -> nn.Module:
    if mixing:  # mixup produces soft targets with the label smoothing already in them
        return SoftTargetCrossEntropy()
    return LabelSmoothingCrossEntropy(config.smoothing) if config.smoothing > 0 else nn.CrossEntropyLoss()


# The loop ----------------------------------------------------------------------------------------------

@dataclass
class StepTimer:
    """Clips per second and the share of time spent waiting for the loader."""

    start: float = dataclasses.field(default_factory=time.perf_counter)
    waited: float = 0.0
    clips: int = 0
    waited_at_last_step: float = 0.0

    def step_wait(self) -> float:
        """Seconds spent waiting for data since the previous call (this optimizer step's batches)."""
        wait, self.waited_at_last_step = self.waited - self.waited_at_last_step, self.waited
        return wait

    def snapshot(self) -> tuple[float, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return self.clips / elapsed, self.waited / elapsed


class LaggedLosses:
    """A step's losses, read on the host one optimizer step later.

    ``loss.item()`` every step makes the host wait for the GPU, which then idles while the host launches the
    next kernels (``sifar-train --compile`` with SIFAR-B-12 on an H100: 310.6 clips/s that way, 318.4 this
    way, in runs of two sessions; docs/PERFORMANCE.md). Here a step's losses are copied to the host in stream
    order and read once the next step has been queued, when the copy is done. A non-finite loss still stops
    training before anything after it is saved: the trainer resolves the pending step before each checkpoint.
    """

    def __init__(self, advice: str = "") -> None:
        """``advice``: said after the error on a non-finite loss (what to try instead)."""
        self._pending: tuple[torch.Tensor, torch.cuda.Event | None, dict[str, Any]] | None = None
        self._advice = advice

    def push(self, losses: list[torch.Tensor], record: dict[str, Any]) -> dict[str, Any] | None:
        """Queue one step's micro-batch losses and its log record; the previous step's record, resolved."""
        previous = self.resolve()
        values, event = torch.stack(losses).float(), None
        if values.is_cuda:
            values = values.to("cpu", non_blocking=True)  # into pinned memory, without waiting
            event = torch.cuda.Event()
            event.record()
        self._pending = (values, event, record)
        return previous

    def resolve(self) -> dict[str, Any] | None:
        """The pending step's record with ``loss`` (its last micro-batch's) added, or None if none is pending.

        NonFiniteLossError if any loss of that step is NaN or infinite.
        """
        if self._pending is None:
            return None
        values, event, record = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        losses = values.tolist()
        for loss in losses:
            if not math.isfinite(loss):
                advice = f"; {self._advice}" if self._advice else ""
                raise NonFiniteLossError(f"loss is {loss} at epoch {record['epoch']}, step {record['step']}; "
                                         f"stopping with the last good checkpoint kept{advice}")
        return {**record, "loss": losses[-1]}


def timed(iterator: Iterator, timer: StepTimer) -> Iterator:
    """Yield from ``iterator``, adding the time spent waiting for each item to ``timer.waited``."""
    while True:
        began = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        timer.waited += time.perf_counter() - began
        yield item


@dataclass
class TrainingParts:
    """What every training step uses, made once per run: ``model`` is the bare model, ``train_model`` what
    the steps call (wrapped by DDP and torch.compile); ``save(name)`` writes a checkpoint on rank 0."""

    model: SuperImageClassifier
    train_model: nn.Module
    loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    criterion: nn.Module
    mixup: VideoMixup | None
    ema: ModelEmaV3 | None
    scaler: torch.amp.GradScaler
    config: TrainConfig
    dist_info: DistInfo
    log: MetricsLog
    save: Callable[..., None]


def train_one_epoch(parts: TrainingParts, state: TrainState) -> bool:
    """One epoch (or its remainder after a resume). Returns False when --max-steps stopped the run."""
    model, train_model, loader, config, dist_info = (parts.model, parts.train_model, parts.loader, parts.config,
                                                     parts.dist_info)
    optimizer, mixup, scaler = parts.optimizer, parts.mixup, parts.scaler
    device = dist_info.device
    model.train()
    timer = StepTimer()
    batches = tqdm(total=len(loader), initial=0, disable=not dist_info.is_main, desc=f"epoch {state.epoch}",
                   dynamic_ncols=True)
    losses = LaggedLosses(FP8_NON_FINITE_ADVICE if config.precision == "fp8" else "")
    step_losses: list[torch.Tensor] = []

    def report(record: dict[str, Any] | None) -> None:
        if record is not None:
            batches.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                clips_s=f"{record['clips_per_s']:.1f}", wait=f"{100 * record['data_wait']:.0f}%")
            parts.log.step(**record)

    for micro, (frames, labels, _keys) in enumerate(timed(iter(loader), timer)):
        if config.max_steps is not None and state.step >= config.max_steps:  # --max-steps counts every step
            batches.close()
            return False
        frames = device_clips(frames, device, model.mean, model.std)
        labels = labels.to(device, non_blocking=True)
        targets = labels
        if mixup is not None:
            frames, targets = mixup(frames, labels)
        last_micro = (micro + 1) % config.optim.accum_steps == 0
        sync = contextlib.nullcontext() if last_micro or not hasattr(train_model, "no_sync") else train_model.no_sync()
        with sync:
            with autocast_for(device, config.precision):
                loss = parts.criterion(train_model(frames), targets)
            scaler.scale(loss / config.optim.accum_steps).backward()
        step_losses.append(loss.detach())
        state.batch_in_epoch += 1
        timer.clips += frames.shape[0] * dist_info.world_size
        batches.update(1)
        if not last_micro:
            continue
        if config.optim.clip_grad:
            scaler.unscale_(optimizer)  # clip the true gradients, not the fp16 loss scale's multiples
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_grad)
        scaler.step(optimizer)  # skipped when fp16 gradients overflowed; the scale then backs off
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        parts.scheduler.step_update(state.step)
        if parts.ema is not None:
            parts.ema.update(model, step=state.step)
        clips_per_s, wait = timer.snapshot()
        report(losses.push(step_losses, dict(step=state.step, epoch=state.epoch, lr=optimizer.param_groups[0]["lr"],
                                              clips_per_s=clips_per_s, data_wait=wait, wait_s=timer.step_wait())))
        step_losses = []
        if state.step % config.save_every == 0:
            report(losses.resolve())  # a non-finite loss stops the run before this step is saved
            parts.save()
        if config.max_steps is not None and state.step >= config.max_steps:
            report(losses.resolve())
            batches.close()
            return False
    report(losses.resolve())
    batches.close()
    return True


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) a training job; returns the final summary (also written to summary.json)."""
    clip = resolved_clip(config)
    resume_from = resume_checkpoint(config, Path(config.output))
    dist_info = init_distributed(config.device)
    try:
        return _train(config, clip, resume_from, dist_info)
    finally:
        cleanup()


TRAIN_LOCK = ".sifar-train.lock"


def _train(config: TrainConfig, clip: ClipSettings, resume_from: Path | None, dist_info: DistInfo) -> dict[str, Any]:
    output = prepare_output(config.output)
    # rank 0 writes everything in the folder; if it cannot have it, it fails and torchrun ends the job
    with run_lock(output, TRAIN_LOCK, "training run") if dist_info.is_main else contextlib.nullcontext():
        return _train_in(output, config, clip, resume_from, dist_info)


def _train_in(output: Path, config: TrainConfig, clip: ClipSettings, resume_from: Path | None,
              dist_info: DistInfo) -> dict[str, Any]:
    allow_tf32()
    if config.precision == "fp8":
        check_float8(dist_info.device)  # before the loader, which may decode a whole split first
    if config.gelu_epilogue:
        check_training_gelu_epilogue(dist_info.device, config.precision, config.model.name)
    seed_everything(config.seed)  # same initial weights on every rank
    optim = config.optim
    train_loader = build_loader(config.shards, clip, config.loader, split="train", training=True, seed=config.seed,
                                rank=dist_info.rank, world_size=dist_info.world_size,
                                steps_per_epoch=config.steps_per_epoch, device=dist_info.device)
    num_classes = resolve_num_classes(config, train_loader.num_classes)
    classes = train_loader.classes or [str(i) for i in range(num_classes)]
    val_loader = _val_loader(config, clip, dist_info) if config.val_shards else None
    if val_loader is not None:
        check_same_classes(classes, val_loader.classes, f"the training shards {config.shards}",
                           f"the validation shards {config.val_shards}")
    setup = RunSetup(replace(config.model, num_classes=num_classes), clip, classes)
    model = build_model(setup.model, clip, num_classes, attention=config.attention,
                        grad_checkpointing=config.grad_checkpointing).to(dist_info.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    float8 = convert_to_float8(model, dist_info.device) if config.precision == "fp8" else []
    gelu_epilogues = use_training_gelu_epilogue(model) if config.gelu_epilogue else 0
    updates_per_epoch = max(1, train_loader.steps_per_epoch // optim.accum_steps)
    lr = effective_lr(optim, config.loader.batch_size, dist_info.world_size)
    optimizer = build_optimizer(model, optim, lr, dist_info.device)
    scheduler = build_scheduler(optimizer, optim, updates_per_epoch)
    mixing = optim.mixup > 0 or optim.cutmix > 0
    mixup = VideoMixup(num_classes, optim.mixup, optim.cutmix, optim.smoothing) if mixing else None
    criterion = build_criterion(optim, mixing)
    ema = ModelEmaV3(model, decay=optim.ema_decay) if optim.ema_decay > 0 else None
    scaler = grad_scaler(dist_info.device, config.precision)
    state, saved_rng = TrainState(), None
    if resume_from is not None:
        state, saved_rng = restore(resume_from, model, optimizer, scheduler, ema, scaler, config)
    if dist_info.is_main:  # only now: a refused resume leaves the folder as it was
        tqdm.write(describe_precision(dist_info.device, config.precision)
                   + (f"; {len(float8)} linear layers in fp8" if float8 else "")
                   + (f"; GELU in cuBLASLt's epilogues in {gelu_epilogues} MLPs" if gelu_epilogues else ""))
        remove_unfinished_checkpoints(output)
        write_json(output / "config.json", dataclasses.asdict(config))
    seed_everything(config.seed + 1000 * (dist_info.rank + 1))  # per-rank drop-path and mixup streams
    train_model = model
    if dist_info.world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[dist_info.local_rank]
                                              if dist_info.device.type == "cuda" else None)
    if config.compile:
        train_model = compile_model(train_model, training=True)
    log = MetricsLog(output, enabled=dist_info.is_main, tensorboard=config.tensorboard,
                     log_interval=config.log_interval)
    log.rewind(state.step, state.epoch)

    def save(name: str = "last.pt") -> None:
        if dist_info.is_main:
            save_checkpoint(checkpoint_state(model, optimizer, scheduler, ema, scaler, state, config,
                                             setup), output / name)
        barrier()

    parts = TrainingParts(model, train_model, train_loader, optimizer, scheduler, criterion, mixup, ema, scaler,
                          config, dist_info, log, save)
    best: EvalResult | None = None
    short_val_shards: set[str] = set()
    finished = True
    while state.epoch < optim.epochs:
        train_loader.set_epoch(state.epoch, start_batch=state.batch_in_epoch)
        if saved_rng is not None:  # continue the random streams exactly where the checkpoint left them
            set_rng_state(saved_rng)
            saved_rng = None
        finished = train_one_epoch(parts, state)
        if not finished:
            save()
            break
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        result = None
        if val_loader is not None:
            result = evaluate(ema.module if ema is not None else model, val_loader, dist_info.device,
                              num_classes, config.precision)
            coverage = evaluation_coverage(val_loader, dist_info.device)
            warn_short_shards(coverage, short_val_shards)
            log.epoch(epoch=state.epoch, **result.summary(), **coverage.summary(result.evaluated))
            if result.top1 > state.best_top1:
                state.best_top1, best = result.top1, result
                save("best.pt")
        log.plot()
        save()
    summary = {"epochs_done": state.epoch, "steps": state.step, "best_top1": state.best_top1,
               "stopped_early": not finished, "loader": train_loader.stats,
               "val_short_shards": sorted(short_val_shards)}
    if dist_info.is_main:
        if best is not None:
            write_eval_report(best, classes, output, prefix="best_")
        log.finish(summary)
    return summary


def warn_short_shards(coverage: Coverage, warned: set[str]) -> None:
    """Warn once per shard that validation read short of its manifest count (``warned``: those already)."""
    for url, expected, read in coverage.short_shards():
        if url not in warned:
            warned.add(url)
            warnings.warn(f"validation read {read} of the {expected} samples the manifest lists in {url}; "
                          "its top-1 is over what was read (summary.json lists such shards)", stacklevel=2)


def seed_everything(seed: int) -> None:
    """Seed every generator a step draws from: Python, NumPy (timm's Mixup) and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _val_loader(config: TrainConfig, clip: ClipSettings, dist_info: DistInfo):
    return build_loader(config.val_shards, clip, config.loader, split="val", training=False,
                        clips=config.views.clips, crops=config.views.crops, seed=config.seed, rank=dist_info.rank,
                        world_size=dist_info.world_size)
