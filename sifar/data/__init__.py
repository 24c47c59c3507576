"""Data: datasets' shipped formats, shard writing, frame sampling, transforms and the streaming loader."""
