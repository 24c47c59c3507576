"""``sifar-train``: the trainer's command line, generated from :class:`sifar.train_config.TrainConfig`."""

from __future__ import annotations

import click

from sifar.checkpoint import CheckpointWriteError
from sifar.cli.options import command_settings, config_from_options, dataclass_options, usage_error
from sifar.checkpoint_file import CheckpointError
from sifar.run_lock import FolderInUseError
from sifar.train import NonFiniteLossError, train
from sifar.config_fields import ConfigError, config_from_dict, read_config_file
from sifar.train_config import TrainConfig

USER_ERRORS = (ValueError, KeyError, FileNotFoundError, PermissionError, ConnectionError, CheckpointError,
               CheckpointWriteError, NonFiniteLossError, FolderInUseError)


@command_settings("sifar-train")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file of settings in sections, as a run's config.json (configs/ has the paper's recipes); "
                   "options given on the command line override it.")
@dataclass_options(TrainConfig)
def main(config_file: str | None, **values) -> None:
    """Train a SIFAR model on streamed shards (one process, or under torchrun for DDP).

    The learning rate is used as given (--lr, 1e-4 by default, as the official code does); --scale-lr
    multiplies it by global batch / 512 instead. Re-running into the same --output resumes from last.pt.
    """
    config = _config(config_file, values)
    for required in ("shards", "output"):
        if not getattr(config, required):
            raise click.UsageError(f"--{required} is required (on the command line or in --config)")
    try:
        summary = train(config)
    except ConfigError as err:  # "<field>: <why>": a usage error naming the option
        raise usage_error(err) from err
    except USER_ERRORS as err:
        raise click.ClickException(str(err.args[0] if isinstance(err, KeyError) and err.args else err)) from err
    click.echo(f"done: {summary['epochs_done']} epochs, {summary['steps']} steps, best top-1 {summary['best_top1']:.2f}"
               f" -> {config.output}")


def _config(config_file: str | None, values: dict) -> TrainConfig:
    """The file's settings (checked on their own first, so an error names the file), then the options given."""
    base = {}
    if config_file is not None:
        try:
            base = read_config_file(config_file)
            config_from_dict(TrainConfig, base)
        except ConfigError as err:
            raise click.BadParameter(f"{config_file}: {err}", param_hint="--config") from err
    try:
        return config_from_options(TrainConfig, values, base)
    except ConfigError as err:
        raise usage_error(err) from err


if __name__ == "__main__":
    main()
