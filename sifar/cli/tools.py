"""``sifar-tools``: preprocessing and model utilities, one click group."""

from __future__ import annotations

import click

from sifar import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sifar-tools")
def main() -> None:
    """SIFAR toolkit: shard datasets, inspect shards, list models and their FLOPs, export trained models, describe
    this machine."""


def _register_commands() -> None:
    from sifar.cli import data_commands, demo, env_command, export, model_commands

    for module in (data_commands, model_commands, export, demo, env_command):
        for command in module.COMMANDS:
            main.add_command(command)


_register_commands()

if __name__ == "__main__":
    main()
