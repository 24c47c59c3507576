"""Data: datasets' shipped formats, shard writing, frame sampling, transforms and the streaming loader."""

from sifar.data.loader import build_loader
