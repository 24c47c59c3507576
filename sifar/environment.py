"""What a bug report needs to know about this machine: versions, ffmpeg, the JPEG decoder, the GPUs
(``sifar-tools env``)."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import sifar
from sifar.data.decoders import auto_decoder, region_decoding_available
from sifar.data.ffmpeg import ffmpeg_exe
from sifar.precision import resolve_precision

# the last two are extras that change a training step: --precision fp8 and --gelu-epilogue
PACKAGES = ("torch", "torchvision", "timm", "webdataset", "huggingface_hub", "torchao", "nvmath-python")


def environment() -> dict[str, Any]:
    """Everything :func:`format_environment` prints, as data (``sifar-tools env --json``)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "sifar": {"version": sifar.__version__, "path": str(Path(sifar.__file__).parent)},
        "ffmpeg": _ffmpeg(),
        "jpeg_decoder": _jpeg_decoder(),
        "cuda": _cuda(),
    }


def format_environment(env: dict[str, Any]) -> list[str]:
    """The environment as aligned ``name  value`` lines."""
    rows = [("python", f"{env['python']} ({env['platform']})")]
    rows += [(name, version or "not installed") for name, version in env["packages"].items()]
    rows.append(("sifar", f"{env['sifar']['version']} ({env['sifar']['path']})"))
    ffmpeg = env["ffmpeg"]
    rows.append(("ffmpeg", f"{ffmpeg['path']}: {ffmpeg['version']}" if ffmpeg["path"] else ffmpeg["version"]))
    decoder = env["jpeg_decoder"]
    rows.append(("jpeg decoder", f"{decoder['decoder']}: {decoder['why']}"))
    cuda = env["cuda"]
    if not cuda["devices"]:
        rows.append(("cuda", f"no CUDA (torch built for CUDA {cuda['torch_cuda']})" if cuda["torch_cuda"]
                     else "no CUDA (a CPU-only torch)"))
    for device in cuda["devices"]:
        rows.append((f"cuda:{device['index']}", f"{device['name']}, bf16 {'yes' if device['bf16'] else 'no'} "
                                                f"(--precision auto: {device['auto_precision']})"))
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value}" for name, value in rows]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _ffmpeg() -> dict[str, str | None]:
    """The ffmpeg the project runs (PATH, else imageio-ffmpeg's) and the first line of its ``-version``."""
    try:
        path = ffmpeg_exe()
        shown = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:  # imageio-ffmpeg: RuntimeError if absent
        return {"path": None, "version": f"not found ({err})"}
    first_line = shown.stdout.splitlines()[0] if shown.stdout else "unknown"
    return {"path": path, "version": first_line.split(" Copyright")[0]}


def _jpeg_decoder() -> dict[str, Any]:
    decoder, why = auto_decoder()
    return {"decoder": decoder, "region_decoder_built": region_decoding_available(), "why": why}


def _cuda() -> dict[str, Any]:
    devices = []
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        with torch.cuda.device(index):
            bf16 = torch.cuda.is_bf16_supported()
        devices.append({"index": index, "name": torch.cuda.get_device_name(index), "bf16": bf16,
                        "auto_precision": resolve_precision(torch.device("cuda", index), "auto", bf16)})
    return {"torch_cuda": torch.version.cuda, "devices": devices}
