"""``sifar-train``: the trainer's command line, generated from :class:`sifar.train_config.TrainConfig`."""

from __future__ import annotations

import click

from sifar.checkpoint import CheckpointWriteError
from sifar.cli.options import dataclass_options, usage_error
from sifar.checkpoint_file import CheckpointError
from sifar.run_lock import FolderInUseError
from sifar.train import NonFiniteLossError, train
from sifar.config_fields import ConfigError
from sifar.train_config import TrainConfig

USER_ERRORS = (ValueError, KeyError, FileNotFoundError, PermissionError, ConnectionError, CheckpointError,
               CheckpointWriteError, NonFiniteLossError, FolderInUseError)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@dataclass_options(TrainConfig)
def main(**settings) -> None:
    """Train a SIFAR model on streamed shards (one process, or under torchrun for DDP).

    The learning rate is used as given (--lr, 1e-4 by default, as the official code does); --scale-lr
    multiplies it by global batch / 512 instead. Re-running into the same --output resumes from last.pt.
    """
    for required in ("shards", "output"):
        if not settings[required]:
            raise click.UsageError(f"--{required} is required")
    try:
        summary = train(TrainConfig(**settings))
    except ConfigError as err:  # "<field>: <why>": a usage error naming the option
        raise usage_error(err) from err
    except USER_ERRORS as err:
        raise click.ClickException(str(err.args[0] if isinstance(err, KeyError) and err.args else err)) from err
    click.echo(f"done: {summary['epochs_done']} epochs, {summary['steps']} steps, best top-1 {summary['best_top1']:.2f}"
               f" -> {settings['output']}")


if __name__ == "__main__":
    main()
