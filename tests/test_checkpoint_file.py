"""Checkpoint files are sealed with their SHA-256 and verified on every load: a flipped byte, a truncated
copy or a foreign file fails naming the file, never loading silently and never as a bare traceback."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sifar.checkpoint import load_checkpoint, save_checkpoint
from sifar.checkpoint_file import RECORDS_SEAL_PREFIX, SEAL_PREFIX, CheckpointError, load_verified
from sifar.models.weights import read_state_dict

STATE = {"model": {"w": torch.arange(4000, dtype=torch.float32), "b": torch.ones(3)}, "classes": ["a", "b"],
         "model_info": {"name": "SIFAR-N-6"}, "state": {"step": 7}}


@pytest.fixture(scope="module")
def sealed(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("sealed") / "last.pt"
    save_checkpoint(STATE, path)
    return path.read_bytes()


def records_end(data: bytes, tmp_path: Path) -> int:
    (tmp_path / "probe.pt").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "probe.pt") as archive:
        return archive.start_dir


def test_a_sealed_checkpoint_is_a_plain_torch_file_with_its_checksum_in_the_zip_comment(sealed, tmp_path):
    path = tmp_path / "copy.pt"
    path.write_bytes(sealed)
    with zipfile.ZipFile(path) as archive:
        assert archive.comment.startswith(SEAL_PREFIX) and len(archive.comment) == len(SEAL_PREFIX) + 64
    plain = torch.load(path, weights_only=True)  # torch and zip tools ignore the comment
    assert torch.equal(plain["model"]["w"], STATE["model"]["w"])
    assert load_checkpoint(path)["state"] == {"step": 7}
    assert torch.equal(torch.load(path, weights_only=True, mmap=True)["model"]["b"], torch.ones(3))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_in_the_records_is_caught_naming_the_file(sealed, tmp_path, fraction, bit):
    data = bytearray(sealed)
    data[int(fraction * records_end(sealed, tmp_path))] ^= 1 << bit
    path = tmp_path / "flipped.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=f"{path} is corrupt: its contents do not match the SHA-256"):
        load_verified(path)


def same_state(loaded: dict) -> bool:
    return (loaded.keys() == STATE.keys() and all(torch.equal(loaded["model"][k], v) for k, v in STATE["model"].items())
            and all(loaded[key] == STATE[key] for key in ("classes", "model_info", "state")))


def central_directory_entries(data: bytes, tmp_path: Path) -> list[tuple[str, int]]:
    """(name, offset) of each central-directory entry of the zip archive ``data``."""
    offset, entries = records_end(data, tmp_path), []
    while data[offset:offset + 4] == b"PK\x01\x02":
        name_size, extra_size, comment_size = struct.unpack("<HHH", data[offset + 28:offset + 34])
        entries.append((data[offset + 46:offset + 46 + name_size].decode(), offset))
        offset += 46 + name_size + extra_size + comment_size
    return entries


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_a_flipped_bit_anywhere_fails_naming_the_file(sealed, tmp_path, fraction, bit):
    """Anywhere: the records, the central directory that locates them, the end record, the seal itself (a damaged
    prefix must not leave an unsealed file that loads unverified: with another damaged byte elsewhere it loaded
    other contents). Any other exception fails the test too: a bare traceback names no file."""
    data = bytearray(sealed)
    data[int(fraction * len(sealed))] ^= 1 << bit
    path = tmp_path / "flipped.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


@pytest.mark.parametrize("field, flip", [(10, 8), (6, 0x80), (46, 0x80)])
def test_a_damaged_directory_entry_is_corrupt_not_a_bare_zipfile_error(sealed, tmp_path, field, flip):
    """A record's compression method (0 -> 8: torch.load read other numbers when the seal covered the records
    alone), the zip version it needs (over 6.3: zipfile's NotImplementedError) and its name (a byte that is not
    UTF-8 under the UTF-8 flag: zipfile's UnicodeDecodeError, found by the property test above)."""
    _name, offset = next(entry for entry in central_directory_entries(sealed, tmp_path) if entry[0].endswith("data/0"))
    data = bytearray(sealed)
    data[offset + field] ^= flip
    path = tmp_path / "directory.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=f"{path} is corrupt"):
        load_checkpoint(path)


def test_checkpoints_sealed_over_their_records_alone_are_still_verified(tmp_path):
    """Before session 23 the seal covered the records only (``RECORDS_SEAL_PREFIX``): such files load, and a
    flipped bit in their records is caught."""
    buffer = io.BytesIO()
    torch.save(STATE, buffer)
    with zipfile.ZipFile(buffer) as archive:
        digest = hashlib.sha256(buffer.getbuffer()[:archive.start_dir]).hexdigest()
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.comment = RECORDS_SEAL_PREFIX + digest.encode()
    path = tmp_path / "old.pt"
    path.write_bytes(buffer.getvalue())
    assert same_state(load_checkpoint(path))
    data = bytearray(buffer.getvalue())
    data[len(data) // 3] ^= 1
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=f"{path} is corrupt"):
        load_checkpoint(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_a_checkpoint_cut_anywhere_fails_naming_the_file(sealed, tmp_path, fraction):
    path = tmp_path / "cut.pt"
    path.write_bytes(sealed[:int(fraction * len(sealed))])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_a_copy_cut_inside_its_seal_is_called_truncated_not_loaded_unsealed(sealed, tmp_path):
    """zipfile reads a zip comment cut short as far as the file goes: cut before the seal's prefix is whole, the
    file looked unsealed and loaded unverified (found by the property test above)."""
    seal = len(SEAL_PREFIX) + 64
    path = tmp_path / "cut.pt"
    for kept in range(seal):  # 0 to 76 of the seal's 77 bytes
        path.write_bytes(sealed[:len(sealed) - seal + kept])
        with pytest.raises(CheckpointError, match=f"{path} is truncated"):
            load_checkpoint(path)


def test_a_truncated_archive_is_called_truncated(sealed, tmp_path):
    path = tmp_path / "half.pt"
    path.write_bytes(sealed[:len(sealed) // 2])
    with pytest.raises(CheckpointError, match=f"{path} is truncated: its {len(sealed) // 2} bytes end before"):
        load_checkpoint(path)


def test_foreign_files_name_what_they_are(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello world\n")
    with pytest.raises(CheckpointError, match=f"{text} is not a readable PyTorch checkpoint"):
        load_checkpoint(text)
    weights = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, weights)  # a torch file of someone else: unsealed, loads unverified
    with pytest.raises(CheckpointError, match=f"{weights} is not a sifar training checkpoint"):
        load_checkpoint(weights)
    assert set(read_state_dict(weights)) == {"w"}
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
