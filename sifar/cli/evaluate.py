"""``sifar-eval``: multi-view evaluation of a checkpoint on streamed shards (torchrun for several GPUs)."""

from __future__ import annotations

from pathlib import Path

import click

from sifar.checkpoint_file import CheckpointError
from sifar.cli.options import command_settings, config_from_options, dataclass_options, usage_error
from sifar.config_fields import ConfigError
from sifar.distributed import cleanup, init_distributed
from sifar.io import check_local_folder
from sifar.evaluate import EvalSettings, IncompleteEvaluationError, check_coverage, evaluate_checkpoint
from sifar.precision import allow_tf32


@command_settings("sifar-eval")
@click.option("--shards", required=True, help="Evaluation shards: folder, manifest, pattern or URL.")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="A sifar checkpoint (best.pt).")
@dataclass_options(EvalSettings)
@click.option("--reverse-frames", is_flag=True, help="Evaluate with the frame order reversed (paper Table 9).")
@click.option("--shuffle-frames", is_flag=True, help="Evaluate with the frame order shuffled (paper Table 9).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--output", default=None, help="Report folder (default: beside the checkpoint).")
@click.option("--allow-partial", is_flag=True,
              help="Accept evaluating fewer videos than the manifest lists (default: an error naming the shards).")
def main(shards, checkpoint, reverse_frames, shuffle_frames, device, output, allow_partial, **values) -> None:
    """Top-1/top-5, per-class accuracy and a confusion matrix; softmax averaged over clips x crops."""
    if reverse_frames and shuffle_frames:
        raise click.UsageError("--reverse-frames and --shuffle-frames exclude each other")
    order = "reverse" if reverse_frames else "shuffle" if shuffle_frames else "normal"
    try:
        settings = config_from_options(EvalSettings, values)
        check_local_folder(output)
    except (ConfigError, ValueError) as err:
        raise usage_error(err) from err
    info = init_distributed(device)
    allow_tf32()
    try:
        evaluation = evaluate_checkpoint(checkpoint, shards, settings, info.device, info.rank, info.world_size,
                                         orders=(order,), progress=True)
    except (ValueError, KeyError, OSError, CheckpointError) as err:  # OSError: unreadable files, storage errors
        raise click.ClickException(str(err)) from err
    finally:
        cleanup()
    result, coverage = evaluation.results[order], evaluation.coverage
    if info.is_main:
        paths = evaluation.write_reports(Path(output) if output else Path(checkpoint).parent / "eval")[order]
        listed = "" if coverage.expected is None else f" of {coverage.expected} listed"
        click.echo(f"top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  on {result.num_samples} videos{listed} "
                   f"({coverage.skipped} skipped; {settings.views.clips} clip(s) x {settings.views.crops} crop(s), "
                   f"{evaluation.clip.sampling} sampling, {evaluation.trained.weights} weights, {order} order); "
                   f"{result.videos_per_s:.1f} videos/s per process after the first batch")
        click.echo(f"report: {paths['report']}\nconfusion matrix: {paths['confusion']}")
    try:
        check_coverage(coverage, result.evaluated, allow_partial)
    except IncompleteEvaluationError as err:
        raise click.ClickException(str(err)) from err


if __name__ == "__main__":
    main()
