"""Progress bars of the commands that read many things (evaluation, inspection, prediction over many videos)."""

from __future__ import annotations

from typing import Any, Iterable

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, enabled: bool = True, **options: Any) -> tqdm:
    """A tqdm bar on stderr, shown only when ``enabled`` and stderr is a terminal: logs and pipes stay clean."""
    return tqdm(iterable, disable=None if enabled else True, dynamic_ncols=True, **options)
