"""The settings of a training run, as composed data: the model (:class:`~sifar.models.settings.ModelSettings`),
the clip (:class:`~sifar.data.clip.ClipSettings`), the loader (:class:`~sifar.data.pipeline.LoaderSettings`),
the optimisation (:class:`OptimSettings`) and the run's own settings. Each field is one option of
``sifar-train`` (help and bounds beside it); the whole is written to ``<output>/config.json`` and into every
checkpoint, and read back by ``--config``."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from sifar.config_fields import help_field, validate
from sifar.data.clip import ClipSettings, ViewSettings
from sifar.data.pipeline import LoaderSettings
from sifar.distributed import check_device
from sifar.io import check_local_folder
from sifar.models.settings import ModelSettings
from sifar.models.window_attention import ATTENTION_HELP, AttentionImpl
from sifar.precision import TRAIN_PRECISION_HELP, TrainPrecision

LR_REFERENCE_BATCH = 512


@dataclass(frozen=True)
class OptimSettings:
    """AdamW on a cosine schedule with linear warm-up, label smoothing, Mixup/CutMix, an optional EMA."""

    epochs: int = help_field(30, "Training epochs.", min=1)
    warmup_epochs: float = help_field(5.0, "Linear warm-up epochs before the cosine decay.", min=0)
    lr: float = help_field(1e-4, "Base learning rate (used as is unless --scale-lr).", min=0, min_open=True)
    scale_lr: bool = help_field(False, f"Scale the LR linearly by global batch / {LR_REFERENCE_BATCH}.")
    min_lr: float = help_field(1e-6, "Final learning rate of the cosine schedule.", min=0)
    warmup_lr: float = help_field(1e-6, "Learning rate at the start of warm-up.", min=0)
    weight_decay: float = help_field(0.05, "AdamW weight decay (not on norms, biases and position tables).", min=0)
    clip_grad: float | None = help_field(None, "Clip the gradient norm to this value.", min=0, min_open=True)
    accum_steps: int = help_field(1, "Gradient accumulation steps per optimizer step.", min=1)
    ema_decay: float = help_field(0.0, "Keep an EMA of the weights with this decay (0: off).", min=0, max=1,
                                  max_open=True)
    smoothing: float = help_field(0.1, "Label smoothing.", min=0, max=1, max_open=True)
    mixup: float = help_field(0.8, "Mixup alpha (0 disables).", min=0)
    cutmix: float = help_field(1.0, "CutMix alpha (0 disables).", min=0)

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; written to ``<output>/config.json`` and into each checkpoint."""

    shards: str = help_field(None, "Training shards: folder, manifest, brace pattern or s3/gs/http URL. "
                                   "[required, here or in --config]")
    output: str = help_field(None, "Output folder (checkpoints, metrics, plots); a local folder. Re-running into "
                                   "it resumes. [required, here or in --config]")
    val_shards: str | None = help_field(None, "Validation shards (same forms as --shards).")
    model: ModelSettings = field(default_factory=ModelSettings)
    clip: ClipSettings = field(default_factory=ClipSettings)
    loader: LoaderSettings = field(default_factory=LoaderSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    steps_per_epoch: int | None = help_field(None, "Steps per epoch per rank (default: manifest samples / batch).",
                                             min=1)
    max_steps: int | None = help_field(None, "Stop (with a checkpoint) after this many optimizer steps.", min=1)
    views: ViewSettings = field(default_factory=lambda: ViewSettings(crops=1))  # validation's
    log_interval: int = help_field(1, "Write a step record to metrics.jsonl and TensorBoard every N optimizer steps.",
                                   min=1)
    tensorboard: bool | None = help_field(None, "TensorBoard scalars in <output>/tensorboard [default: when "
                                                "installed, pip install -e \".[tb]\"]; --tensorboard says so when "
                                                "it is missing.")
    save_every: int = help_field(500, "Write last.pt every N optimizer steps (and at each epoch's end).", min=1)
    resume: str = help_field("auto", "Continue from a checkpoint: auto (<output>/last.pt when it exists), a "
                                     "checkpoint's path, or off (start over).", flag_value="auto", off_value="off")
    seed: int = help_field(0, "Seed for weights, data order, augmentation and mixup.")
    device: str = help_field("auto", "auto, cpu, cuda or cuda:N.")
    precision: TrainPrecision = help_field("auto", TRAIN_PRECISION_HELP)
    attention: AttentionImpl = help_field("auto", ATTENTION_HELP)
    compile: bool = help_field(False, "torch.compile the model.")
    gelu_epilogue: bool = help_field(False, "Swin MLPs' GELU (tanh) and its gradient in cuBLASLt's GEMM epilogues "
                                            "in bf16/fp16 training on CUDA, through nvmath-python (pip install "
                                            "'sifar[gelu]'); 1.04x on an H100 (docs/PERFORMANCE.md).")
    grad_checkpointing: bool = help_field(False, "Activation checkpointing (less memory, more compute).")
    channels_last: bool = help_field(False, "Channels-last weights and activations (faster for CNN backbones).")

    def __post_init__(self) -> None:
        validate(self, partial(check_device, self.device), partial(check_local_folder, self.output))
