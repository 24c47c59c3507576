"""``sifar-eval``: multi-view evaluation of a checkpoint on streamed shards (torchrun for several GPUs)."""

from __future__ import annotations

from pathlib import Path

import click

from sifar.checkpoint import model_from_checkpoint
from sifar.data import build_loader
from sifar.distributed import cleanup, init_distributed
from sifar.evaluate import (IncompleteEvaluationError, check_coverage, check_same_classes, evaluate,
                            evaluation_coverage, write_eval_report)
from sifar.models import compile_model
from sifar.checkpoint_file import CheckpointError
from sifar.precision import allow_tf32


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--shards", required=True, help="Evaluation shards: folder, manifest, pattern or URL.")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="A sifar checkpoint (best.pt).")
@click.option("--clips", default=1, show_default=True, help="Temporal clips per video.")
@click.option("--crops", default=3, show_default=True, type=click.Choice(["1", "3"]), help="Spatial crops per clip.")
@click.option("--reverse-frames", is_flag=True, help="Evaluate with the frame order reversed (paper Table 9).")
@click.option("--shuffle-frames", is_flag=True, help="Evaluate with the frame order shuffled (paper Table 9).")
@click.option("--batch-size", default=16, show_default=True, help="Videos per step per process.")
@click.option("--workers", default=4, show_default=True, help="Loader worker processes per process.")
@click.option("--split", default="val", show_default=True, help="Split name, for shard folders.")
@click.option("--ema", is_flag=True, help="Use the checkpoint's EMA weights.")
@click.option("--precision", default="auto", type=click.Choice(["auto", "bf16", "fp32"]), show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--attention", default="auto", type=click.Choice(["auto", "flex", "sdpa", "eager"]), show_default=True,
              help="Swin attention kernel: auto (flex on GPU, sdpa on CPU), flex, sdpa (fused), eager (official).")
@click.option("--compile", "compiled", is_flag=True, help="torch.compile the model (GPU: faster after warm-up).")
@click.option("--output", default=None, help="Report folder (default: beside the checkpoint).")
@click.option("--allow-partial", is_flag=True,
              help="Accept evaluating fewer videos than the manifest lists (default: an error naming the shards).")
def main(shards, checkpoint, clips, crops, reverse_frames, shuffle_frames, batch_size, workers, split, ema,
         precision, device, attention, compiled, output, allow_partial) -> None:
    """Top-1/top-5, per-class accuracy and a confusion matrix; softmax averaged over clips x crops."""
    if reverse_frames and shuffle_frames:
        raise click.UsageError("--reverse-frames and --shuffle-frames exclude each other")
    order = "reverse" if reverse_frames else "shuffle" if shuffle_frames else "normal"
    info = init_distributed(device)
    allow_tf32()
    try:
        model, classes = model_from_checkpoint(checkpoint, use_ema=ema, attention=attention)
        loader = build_loader(shards, split=split, num_frames=model.num_frames, frame_size=model.frame_size,
                              batch_size=batch_size, num_workers=workers, clips=clips, crops=int(crops),
                              rank=info.rank, world_size=info.world_size)
        check_same_classes(classes, loader.classes, f"the checkpoint {checkpoint}", f"the shards {shards}")
        model = model.to(info.device)
        model = compile_model(model, training=False) if compiled else model
        result = evaluate(model, loader, info.device, len(classes), precision, order)
        coverage = evaluation_coverage(loader, info.device)
    except (ValueError, KeyError, OSError, CheckpointError) as err:  # OSError: unreadable files, storage errors
        raise click.ClickException(str(err)) from err
    finally:
        cleanup()
    if info.is_main:
        folder = Path(output) if output else Path(checkpoint).parent / "eval"
        prefix = "" if order == "normal" else f"{order}_"
        paths = write_eval_report(result, classes, folder, prefix=prefix,
                                  extra={"checkpoint": str(checkpoint), "shards": shards, "clips": clips,
                                         "crops": int(crops), "frame_order": order, "loader": loader.stats,
                                         **coverage.summary(result.evaluated)})
        listed = "" if coverage.expected is None else f" of {coverage.expected} listed"
        click.echo(f"top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  on {result.num_samples} videos{listed} "
                   f"({coverage.skipped} skipped; {clips} clip(s) x {crops} crop(s), {order} order); "
                   f"{result.videos_per_s:.1f} videos/s per process after the first batch")
        click.echo(f"report: {paths['report']}\nconfusion matrix: {paths['confusion']}")
    try:
        check_coverage(coverage, result.evaluated, allow_partial)
    except IncompleteEvaluationError as err:
        raise click.ClickException(str(err)) from err


if __name__ == "__main__":
    main()
