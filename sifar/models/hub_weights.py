"""Pretrained weights by name: a timm ``architecture.tag`` or ``hf-hub:org/name``, fetched as timm fetches them.

Every table of the paper fine-tunes from ImageNet weights, so ``pretrained=`` takes, besides a file, the name
timm gives them (``swin_base_patch4_window12_384.ms_in22k``, as ``timm.list_pretrained()`` lists them) or a
Hugging Face Hub repository of timm weights (``hf-hub:org/name``, as timm's own prefix). A timm name resolves
through timm's registry to its pretrained cfg (hub repository, file, the mean/std the weights expect); an
``hf-hub:`` repository's cfg is its ``config.json``. The file comes through huggingface_hub into its cache (or,
for the few timm weights only at a URL, through torch.hub into its cache), so ``HF_HOME``, ``HF_HUB_OFFLINE``
and ``TORCH_HOME`` work as they do for timm. Names are checked against the registry before anything is
downloaded or built.
"""

from __future__ import annotations

import difflib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.error import URLError

import timm
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id
from timm.models import get_pretrained_cfg, load_model_config_from_hf, split_model_name_tag

# timm's public loaders (load_pretrained, load_state_dict_from_hf) return tensors, or load into a timm model;
# sifar needs the file itself, read and converted by sifar.models.weights. These helpers are the steps of
# those loaders that find the file, so the choice of source (hub before URL) and of file (safetensors before
# pytorch_model.bin) stays timm's own; they are private or unexported in timm, and imported here only.
from timm.models._builder import _resolve_pretrained_source
from timm.models._hub import (
    HF_WEIGHTS_NAME, _get_safe_alternatives, download_cached_file, download_from_hf, get_cache_dir,
)

from sifar.checkpoint_file import CheckpointError

HF_HUB_PREFIX = "hf-hub:"
WEIGHT_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".safetensors", ".ckpt", ".npz")


class NoCheckpointFileError(CheckpointError, FileNotFoundError):
    """No file at a checkpoint path: a CheckpointError like every unusable checkpoint, and a FileNotFoundError."""


@dataclass(frozen=True)
class HubWeights:
    """Weights given by name; ``pretrained_cfg`` is timm's, None for ``hf-hub:`` until its config.json is read."""

    name: str
    pretrained_cfg: dict[str, Any] | None = None


def resolve_weights(pretrained: str | os.PathLike | HubWeights) -> Path | HubWeights:
    """What ``pretrained`` names: a checkpoint file that exists, or weights by name; nothing is downloaded.

    A string is a path when a file is there, or when it has a path separator or a weights-file suffix
    (NoCheckpointFileError when no file is there); else a name. ValueError for a name timm does not know.
    """
    if isinstance(pretrained, HubWeights):
        return pretrained
    text = os.fspath(pretrained)
    if os.path.isfile(text):
        return Path(text)
    if not isinstance(pretrained, str):
        raise NoCheckpointFileError(f"no checkpoint file at {text}")
    if text.startswith(HF_HUB_PREFIX):
        return hf_hub_weights(text)
    if looks_like_path(text):
        raise NoCheckpointFileError(f"no checkpoint file at {text} (read as a path for its separator or suffix; "
                                    "weights by name are written as swin_base_patch4_window12_384.ms_in22k or "
                                    "hf-hub:org/name)")
    return timm_weights(text)


def looks_like_path(text: str) -> bool:
    """Whether ``text`` has a path separator or ends like a weights file, and so is no timm name."""
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return any(sep in text for sep in separators) or text.lower().endswith(WEIGHT_SUFFIXES)


def timm_weights(name: str) -> HubWeights:
    """timm's weights ``architecture.tag`` (a bare architecture: its default tag, as timm does).

    ValueError naming the close matches among timm's pretrained names, or a known architecture's tags.
    """
    arch, tag = split_model_name_tag(name)
    known = timm.list_pretrained()
    tags = [known_name for known_name in known if known_name.startswith(f"{arch}.")]
    if not tags:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else "timm.list_pretrained() lists the names"
        raise ValueError(f"{name!r} is neither a checkpoint file nor timm pretrained weights ({hint}); "
                         f"a Hugging Face Hub repository is written as {HF_HUB_PREFIX}org/name")
    full_name = name if tag else f"{arch}.{get_pretrained_cfg(arch).tag}"
    if full_name not in tags:
        raise ValueError(f"timm has no weights {full_name!r}; those of {arch} are: {', '.join(tags)}")
    return HubWeights(full_name, get_pretrained_cfg(full_name).to_dict())


def hf_hub_weights(name: str) -> HubWeights:
    """``hf-hub:org/name[@revision]``, its repository id checked (HFValidationError, a ValueError)."""
    repo_id = name[len(HF_HUB_PREFIX):]
    validate_repo_id(repo_id.split("@", 1)[0])
    return HubWeights(name)


def fetch_weights(weights: HubWeights) -> tuple[Path, dict[str, Any]]:
    """The local file of ``weights``, downloaded into its cache unless already there, and its pretrained cfg.

    FileNotFoundError naming the cache and what to do when the file is neither cached nor downloadable
    (``HF_HUB_OFFLINE``, no network).
    """
    cfg = weights.pretrained_cfg or hf_hub_config(weights.name)
    source, location = _resolve_pretrained_source(cfg)
    if source == "hf-hub":
        repo_id, filename = location if isinstance(location, tuple) else (location, HF_WEIGHTS_NAME)
        with _explain_unavailable(weights.name, repo_id):
            return Path(hub_file(repo_id, filename)), cfg
    if source == "url":
        return Path(url_file(weights.name, location)), cfg
    raise ValueError(f"{weights.name}: its pretrained cfg names no file to download ({source or 'no source'})")


def hf_hub_config(name: str) -> dict[str, Any]:
    """The pretrained cfg in the ``config.json`` of ``hf-hub:`` repository ``name``, read by timm."""
    repo_id = name[len(HF_HUB_PREFIX):]
    with _explain_unavailable(name, repo_id):
        return load_model_config_from_hf(repo_id)[0]


def hub_file(repo_id: str, filename: str = HF_WEIGHTS_NAME) -> str:
    """The cached path of ``filename`` in ``repo_id``, or of its safetensors version where the repo has one.

    The file timm's ``load_state_dict_from_hf`` reads, chosen in the same order; the last candidate's error
    stands.
    """
    *preferred, last = (*_get_safe_alternatives(filename), filename)
    for candidate in preferred:
        try:
            return download_from_hf(repo_id, candidate)
        except EntryNotFoundError:  # also LocalEntryNotFoundError: offline, the next candidate may be cached
            continue
    return download_from_hf(repo_id, last)


def url_file(name: str, url: str) -> str:
    """The torch.hub cache's copy of ``url`` (timm weights published only at a URL), downloaded if missing.

    HF_HUB_OFFLINE holds here too: timm would try the URL, but offline means no network for any weights.
    """
    cached = Path(get_cache_dir(), os.path.basename(url))
    if hf_constants.HF_HUB_OFFLINE and not cached.exists():
        raise FileNotFoundError(f"{name}: {cached} is not in the torch.hub cache and HF_HUB_OFFLINE is set; "
                                f"run once with network access, or download {url} into {cached.parent}")
    try:
        return download_cached_file(url, check_hash=False)
    except URLError as err:
        raise FileNotFoundError(f"{name}: could not download {url} into {cached.parent} ({err.reason}); run "
                                f"with network access, or download it there by hand") from err


@contextmanager
def _explain_unavailable(name: str, repo_id: str) -> Iterator[None]:
    """huggingface_hub's 'not in the cache and cannot download' as an error naming the cache and the way out."""
    try:
        yield
    except LocalEntryNotFoundError as err:
        repo, _, revision = repo_id.partition("@")
        command = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
        why = "HF_HUB_OFFLINE is set" if hf_constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise FileNotFoundError(
            f"{name}: the weights are not in the Hugging Face cache {hf_constants.HF_HUB_CACHE} and cannot be "
            f"downloaded ({why}); run once with network access to cache them, or run `{command}` where there "
            f"is network and set HF_HOME (or HF_HUB_CACHE) to that cache"
        ) from err
