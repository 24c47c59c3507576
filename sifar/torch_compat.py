"""Every private or version-dependent torch call of the package, fenced here: each names the public way and
says why it is not used, so a torch upgrade is checked in one file.
"""

from __future__ import annotations

import math

import torch
from torch.torch_version import TorchVersion


def torch_at_least(major: int, minor: int) -> bool:
    """A real version comparison (``"2.10" >= "2.9"`` is False as strings)."""
    return TorchVersion(torch.__version__) >= (major, minor)


def resize_antialiased_into(frames: torch.Tensor, size: tuple[int, int], out: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(frames, size, mode="bilinear", antialias=True)`` written into ``out``: the public call
    allocates its result, and the loader resizes straight into the rows of a batch in reused shared memory."""
    return torch.ops.aten._upsample_bilinear2d_aa.out(frames, size, False, None, None, out=out)


def shared_uint8(shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 tensor in a new shared-memory segment, as DataLoader's ``default_collate`` makes them in
    workers; the public ``tensor.share_memory_()`` allocates twice (normal memory, then a shared copy)."""
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def raise_recompile_limit(limit: int) -> None:
    """Let ``torch.compile`` keep at least ``limit`` graphs per function (dynamo's config has no public
    setter; ``torch._dynamo.config`` is where the documentation points)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
