"""``sifar-tools preview``: the super image a sample becomes, so a user can look at what the model sees.

Frames are chosen as evaluation does (:func:`sifar.data.sampling.eval_indices`, one uniform clip) and laid
out by :func:`sifar.layout.to_super_image`, the one place frames become a super image.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from sifar.data.manifest import manifest_path, read_manifest
from sifar.data.sampling import eval_indices
from sifar.data.shard_reader import StoredSample, read_shard
from sifar.layout import Layout, parse_layout, to_super_image


@dataclass(frozen=True)
class SampleLocation:
    """Where a sample is: its shard and position there."""

    shard: str
    position: int


def split_shards(path: str, split: str) -> list[str]:
    """Shard URLs of ``path``: a single ``.tar``, a manifest ``.json``, or a folder holding ``<split>.json``."""
    if path.endswith(".tar"):
        return [path]
    manifest_file = path if path.endswith(".json") else manifest_path(path, split)
    folder = manifest_file.rsplit("/", 1)[0] if "/" in manifest_file else "."
    return [f"{folder}/{shard.name}" for shard in read_manifest(manifest_file).shards]


def locate_sample(shards: list[str], sample: str) -> SampleLocation:
    """The sample whose key is ``sample``, else the one at that integer position counting across shards."""
    by_index, counted = None, 0
    wanted_index = int(sample) if sample.lstrip("-").isdigit() else None
    for shard in shards:
        for position, found in enumerate(read_shard(shard, with_frames=False)):
            if found.key == sample:
                return SampleLocation(shard, position)
            if wanted_index is not None and counted == wanted_index:
                by_index = SampleLocation(shard, position)
            counted += 1
    if by_index is not None:
        return by_index
    raise KeyError(f"no sample with key or index {sample!r} among {counted} samples in {len(shards)} shard(s)")


def load_sample(location: SampleLocation) -> StoredSample:
    """The located sample with its frames."""
    for position, sample in enumerate(read_shard(location.shard)):
        if position == location.position:
            return sample
    raise KeyError(f"{location.shard} has no sample at position {location.position}")


def find_sample(path: str, split: str, sample: str) -> StoredSample:
    """The sample named by key or index in a shard folder, manifest, shard file or URL."""
    return load_sample(locate_sample(split_shards(path, split), sample))


def super_image(sample: StoredSample, num_frames: int = 8, layout: str | Layout | None = None) -> Image.Image:
    """The sample's evaluation clip of ``num_frames`` frames as one RGB super image."""
    rows, cols = parse_layout(layout, num_frames)
    indices = eval_indices(sample.num_frames, num_frames)[0]
    frames = np.stack([np.asarray(Image.open(BytesIO(sample.frames[i])).convert("RGB")) for i in indices])
    clip = rearrange(torch.from_numpy(frames), "t h w c -> 1 t c h w")
    grid = to_super_image(clip, rows, cols)
    return Image.fromarray(rearrange(grid, "1 c h w -> h w c").numpy())
