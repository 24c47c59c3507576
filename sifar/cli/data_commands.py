"""``sifar-tools`` data commands: shard, synth, inspect, preview."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Callable

import click
from click.core import ParameterSource

from sifar.cli.options import comma_items, config_from_options, dataclass_options
from sifar.data.ffmpeg import DecodeSettings
from sifar.data.formats import get_format, list_formats
from sifar.data.formats.source_files import read_lines
from sifar.data.manifest import read_manifest
from sifar.data.shard_writer import ShardLimits, parse_size
from sifar.data.shard_inspect import find_manifests, format_report, inspect_split
from sifar.data.sharding import Part, ShardJob, ShardReport, merge_parts, shard_dataset
from sifar.data.synth import CLASSES, SynthConfig, make_dataset
from sifar.data.synth_reference import evaluate_split
from sifar.data.workers import available_cores
from sifar.io import atomic_write, check_store_access, is_url
from sifar.run_lock import FolderInUseError

SPLITS = ("train", "val", "test")


def load_class_list(path: Path) -> list[str]:
    """Class names from a manifest (``.json``) or a text file with one name a line."""
    return read_manifest(path).classes if path.suffix == ".json" else read_lines(path)


def _location(must_exist: bool) -> Callable[[click.Context, click.Parameter, str], Path | str]:
    """An option's callback: a local folder (``must_exist``: already there) as a Path, an object-store or
    HTTP(S) URL as it is."""
    def convert(ctx: click.Context, param: click.Parameter, value: str) -> Path | str:
        if is_url(value):
            return value
        return click.Path(exists=must_exist, file_okay=False, path_type=Path).convert(value, param, ctx)

    return convert


def _size_option(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err


@click.command()
@click.option("--dataset", type=click.Choice(list_formats()), required=True, help="How the dataset ships.")
@click.option("--src", required=True, callback=_location(must_exist=True),
              help="The dataset's root folder (videos may sit in any subfolder), or an object-store prefix "
                   "(s3://bucket/k400/, gs://...) whose videos ffmpeg streams without a local copy.")
@click.option("--output", "out", required=True, callback=_location(must_exist=False),
              help="Folder for <split>-%06d.tar shards, <split>.json and <split>-errors.jsonl; or an object-store "
                   "prefix (s3://bucket/prefix/, gs://...) to upload each finished shard to (endpoint and "
                   "credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).")
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True)
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The split's annotation file, instead of the shipped name found under --src.")
@click.option("--classes", "classes_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Class list for name-labelled data (kinetics400, csv): a manifest .json or one name a line. "
                   "Default: <out>/train.json's classes for other splits, else sorted names.")
@dataclass_options(DecodeSettings)
@click.option("--shard-size", default="1GB", show_default=True, callback=_size_option,
              help="Target shard size in bytes; suffixes like 500MB, 1GB, 2GiB accepted.")
@click.option("--samples-per-shard", type=click.IntRange(min=1), default=None,
              help="Samples per shard (instead of --shard-size).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Decoding processes. [default: all cores]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the shuffle across shards.")
@click.option("--max-failures", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Exit with status 1 when more than this fraction of videos fails.")
@click.option("--resume", is_flag=True, help="Keep the finished shards of an interrupted run; decode the rest.")
@click.option("--num-parts", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cut the split into this many parts, each sharded by a run of its own (--part), on any machines; "
                   "sifar-tools merge then writes the split's manifest.")
@click.option("--part", type=click.IntRange(min=0), default=None,
              help="The part this run shards, 0 to --num-parts - 1 (a stable choice of videos by their keys).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def shard(dataset: str, src: Path | str, out: Path | str, split: str, annotations: Path | None,
          classes_file: Path | None, shard_size: int, samples_per_shard: int | None, workers: int | None, seed: int,
          max_failures: float, resume: bool, num_parts: int, part: int | None, progress: bool, **decoding) -> None:
    """Decode every video of a dataset split once into per-frame JPEG WebDataset shards."""
    decode = config_from_options(DecodeSettings, decoding)
    if click.get_current_context().get_parameter_source("short_side") is ParameterSource.DEFAULT:
        decode = replace(decode, short_side=get_format(dataset).default_short_side)  # jester ships frames
    job = ShardJob(dataset=dataset, src=src, out=out, split=split, decode=decode,
                   limits=ShardLimits(max_bytes=shard_size, max_samples=samples_per_shard),
                   annotations=annotations, classes=load_class_list(classes_file) if classes_file else None,
                   workers=workers or available_cores(), seed=seed, resume=resume, progress=progress,
                   part=_part(num_parts, part))
    try:
        report = shard_dataset(job)
    except (ValueError, KeyError, OSError, FolderInUseError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(summary_line(report))
    if report.failure_fraction > max_failures:
        raise click.ClickException(f"{len(report.failures)} of {report.total_videos} videos failed "
                                   f"({report.failure_fraction:.1%} > --max-failures {max_failures:.1%}); "
                                   f"reasons in {report.errors_path}")


def summary_line(report: ShardReport) -> str:
    """One line: what was sharded, what was kept from a previous run, what failed, how fast."""
    m = report.manifest
    size = sum(s.bytes for s in m.shards) / 1e6
    kept = (f"kept {report.kept_samples} videos in {report.kept_shards} finished shards, "
            if report.kept_shards else "")
    rate = report.decoded_videos / report.seconds if report.seconds > 0 else 0.0
    return (f"{m.split}: {m.num_samples} videos, {m.num_frames} frames in {len(m.shards)} shards ({size:.1f} MB) "
            f"-> {report.manifest_path}; {kept}decoded {report.decoded_videos} videos in {report.seconds:.1f} s "
            f"({rate:.1f} videos/s); {len(report.failures)} failed (see {report.errors_path})")


def _class_names(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if value is None:
        return tuple(CLASSES)
    if value.isdigit():
        if not 1 <= int(value) <= len(CLASSES):
            raise click.BadParameter(f"between 1 and {len(CLASSES)} classes")
        return tuple(CLASSES)[:int(value)]
    names = comma_items(value)
    unknown = [n for n in names if n not in CLASSES]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(unknown)}; choose from {', '.join(CLASSES)}")
    return names


def _frame_size(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", value.strip())
    if not match:
        raise click.BadParameter("a size S (square) or WxH, e.g. 112 or 160x120")
    width = int(match.group(1))
    return width, int(match.group(2) or width)


@click.command()
@click.option("--output", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for videos/<class>/*.mp4, train.csv and val.csv.")
@click.option("--videos", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--classes", default=None, callback=_class_names,
              help="Comma-separated class names, or a number N for the first N. [default: all 10: move_right, "
                   "move_left, move_down, move_up, grow, shrink, rotate_cw, rotate_ccw, appear, disappear]")
@click.option("--frames", type=click.IntRange(min=2), default=16, show_default=True, help="Frames per video.")
@click.option("--size", default="112", show_default=True, callback=_frame_size,
              help="Frame size: S (square) or WxH; even numbers.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=12.0, show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Processes. [default: all cores]")
@click.option("--progress/--no-progress", default=True, show_default=True)
def synth(out: Path, videos: int, classes: tuple[str, ...], frames: int, size: tuple[int, int], fps: float,
          val_fraction: float, seed: int, workers: int | None, progress: bool) -> None:
    """Make the embedded synthetic dataset: classes told apart only by the order of frames."""
    try:
        config = SynthConfig(out=out, videos=videos, classes=classes, frames=frames, width=size[0], height=size[1],
                             fps=fps, val_fraction=val_fraction, seed=seed, workers=workers or available_cores())
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    train, val = make_dataset(config, progress=progress)
    click.echo(f"{videos} videos of {len(classes)} classes in {out}; lists {train} and {val}")
    click.echo(f"next: sifar-tools shard --dataset csv --src {out} --output {out}/shards --split train --short-side 0"
               f" (then --split val)")


@click.command("synth-reference")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["train", "val"]), default="val", show_default=True)
@click.option("--num-frames", type=click.IntRange(min=2), default=8, show_default=True,
              help="Frames sampled uniformly from each video (the centre of each segment).")
def synth_reference(src: Path, split: str, num_frames: int) -> None:
    """Check that every class of a synthetic dataset is decidable: a reference classifier that learns
    nothing names each video's class from its frames in order (and its twin from them reversed)."""
    try:
        report = evaluate_split(src, split, num_frames)
    except (OSError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    videos = sum(report.total.values())
    click.echo(f"reference classifier on {videos} {split} videos of {src}, {num_frames} frames each: "
               f"top-1 {report.accuracy:.1f}%; reversed frames named as the twin class: "
               f"{report.reversed_twin_rate:.1f}%")
    for name, accuracy in report.per_class().items():
        click.echo(f"  {name:<11} {accuracy:5.1f}%  ({report.correct[name]}/{report.total[name]})")


@click.command()
@click.argument("path")
@click.option("--decode", is_flag=True, help="Also decode every JPEG (slower).")
def inspect(path: str, decode: bool) -> None:
    """Counts, classes, frames per sample and shard sizes of the split(s) at PATH (folder, manifest or URL:
    s3://, gs://, http(s)://); exits with status 1 when a shard cannot be read."""
    try:
        check_store_access(path, context="inspect")
        reports = [inspect_split(m, decode=decode, progress=True) for m in find_manifests(path)]
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err
    for report in reports:
        click.echo("\n".join(format_report(report)))
    bad = sum(len(r.problems) for r in reports)
    if bad:
        raise click.ClickException(f"{bad} bad shard(s) in {path}")


@click.command()
@click.argument("path")
@click.option("--sample", required=True, help="The sample's key, or its index counting across the shards.")
@click.option("--output", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file to write.")
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True,
              help="Split to read when PATH is a shard folder.")
@click.option("--num-frames", type=click.IntRange(min=1), default=8, show_default=True, help="Frames in the clip.")
@click.option("--layout", default="auto", show_default=True, help="Grid as ROWSxCOLS, or auto (the paper's rule).")
def preview(path: str, sample: str, out_file: Path, split: str, num_frames: int, layout: str) -> None:
    """Write the super image a sample becomes (PATH: shard folder, manifest .json, shard .tar or URL)."""
    from sifar.data.preview import find_sample, super_image  # imports torch: slow


    try:
        found = find_sample(path, split, sample)
        image = super_image(found, num_frames, layout)
    except (KeyError, ValueError, OSError) as err:
        raise click.ClickException(str(err).strip("'\"")) from err
    with atomic_write(out_file, "wb") as handle:
        image.save(handle, format="PNG")
    click.echo(f"{found.key} ({found.meta.get('label_name')}, {found.num_frames} frames) -> {out_file} "
               f"({image.width}x{image.height})")


def _part(num_parts: int, part: int | None) -> Part | None:
    if num_parts == 1 and part in (None, 0):
        return None
    if part is None:
        raise click.UsageError(f"--num-parts {num_parts} needs --part (0 to {num_parts - 1}): the part this run "
                               f"shards")
    if part >= num_parts:
        raise click.BadParameter(f"{part} is not one of the parts 0..{num_parts - 1}", param_hint="--part")
    return Part(part, num_parts)


@click.command()
@click.argument("output")
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True)
def merge(output: str, split: str) -> None:
    """Write the manifest of a split sharded in parts (--num-parts/--part) over all of them, so it reads like
    one run's (OUTPUT: the shards' folder or object-store prefix); refuses while parts are missing."""
    try:
        manifest, where = merge_parts(output, split)
    except (ValueError, OSError, FolderInUseError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{split}: {manifest.num_samples} videos, {manifest.num_frames} frames in {len(manifest.shards)} "
               f"shards of {manifest.decode['parts']} parts -> {where}")


COMMANDS = [shard, merge, synth, synth_reference, inspect, preview]
