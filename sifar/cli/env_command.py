"""``sifar-tools env``: what a bug report needs."""

from __future__ import annotations

import json

import click


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
def env_command(as_json: bool) -> None:
    """Versions (Python, torch, torchvision, timm, webdataset, huggingface_hub, sifar), ffmpeg, the JPEG decoder
    the loader uses and why, and the CUDA devices with their bf16 support: paste it into a bug report."""
    from sifar.environment import environment, format_environment  # imports torch: slow

    env = environment()
    click.echo(json.dumps(env, indent=2) if as_json else "\n".join(format_environment(env)))


COMMANDS = [env_command]
