import importlib.util
import os
import socket

import pytest

from shard_files import serve_folder, silent_server, write_split
from sifar.data.sources import open_shard, resolve_source
from sifar.io import NetworkDeadlines, storage_error, storage_options


@pytest.fixture
def folder(tmp_path):
    write_split(tmp_path, "train", shards=3, per_shard=2, num_frames=3)
    write_split(tmp_path, "val", shards=1, per_shard=3, num_frames=3)
    return tmp_path


def names(source):
    return [os.path.basename(shard) for shard in source.shards]


def test_folder_uses_the_splits_manifest(folder):
    source = resolve_source(folder, "train")
    assert names(source) == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert source.manifest.split == "train" and source.num_samples == 6
    assert all(os.path.isfile(shard) for shard in source.shards)
    assert resolve_source(folder, "val").num_samples == 3


def test_folder_without_manifest_lists_the_splits_shards(folder):
    os.remove(folder / "train.json")
    source = resolve_source(str(folder), "train")
    assert names(source) == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert source.manifest is None and source.num_samples is None


def test_manifest_path_gives_its_split(folder):
    source = resolve_source(folder / "val.json", "train")
    assert source.split == "val" and names(source) == ["val-000000.tar"]


def test_brace_pattern_picks_shards_and_the_manifest_beside_them(folder):
    source = resolve_source(f"{folder}/train-{{000001..000002}}.tar", "train")
    assert names(source) == ["train-000001.tar", "train-000002.tar"]
    assert source.samples_in(source.shards[0]) == 2 and source.num_samples == 4


def test_glob_pattern_and_single_shard(folder):
    assert names(resolve_source(f"{folder}/train-*.tar", "train")) == [
        "train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert names(resolve_source(f"file://{folder}/val-000000.tar", "val")) == ["val-000000.tar"]


def test_brace_pattern_keeps_missing_shards_for_the_loader_to_report(folder):
    source = resolve_source(f"{folder}/train-{{000002..000003}}.tar", "train")
    assert names(source) == ["train-000002.tar", "train-000003.tar"]


@pytest.mark.parametrize("make_source, message", [
    (lambda d: d / "nowhere", "no such folder, manifest or shard file"),
    (lambda d: d / "empty", "neither test.json nor test-\\*.tar"),
    (lambda d: f"{d}/train-{{000007..000009}}.tar", "no shard file matches"),
    (lambda d: f"{d}/nothing-*.tar", "no shard file matches"),
    (lambda d: d / "missing.json", "no manifest at"),
])
def test_wrong_sources_fail_at_once_naming_the_source(folder, make_source, message):
    (folder / "empty").mkdir()
    source = make_source(folder)
    with pytest.raises(FileNotFoundError, match=message) as error:
        resolve_source(source, "test")
    assert str(source).split("{")[0].split("*")[0] in str(error.value)


def test_a_manifest_without_shards_or_of_the_wrong_kind_is_refused(folder):
    (folder / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json is not a sifar manifest"):
        resolve_source(folder / "bad.json", "train")
    (folder / "none.json").write_text('{"dataset": "x", "split": "none", "classes": [], "shards": []}')
    with pytest.raises(FileNotFoundError, match="none.json lists no shards"):
        resolve_source(folder / "none.json", "none")


def test_http_sources_resolve_like_local_ones(folder):
    with serve_folder(folder) as url:
        from_manifest = resolve_source(f"{url}/train.json", "train")
        assert from_manifest.shards == [f"{url}/train-00000{i}.tar" for i in range(3)]
        assert from_manifest.num_samples == 6
        assert resolve_source(url, "val").shards == [f"{url}/val-000000.tar"]
        braces = resolve_source(f"{url}/train-{{000000..000001}}.tar", "train")
        assert braces.num_samples == 4
        with open_shard(braces.shards[1]) as stream:
            assert stream.read() == (folder / "train-000001.tar").read_bytes()


def test_missing_and_unreachable_urls_fail_naming_them(folder):
    with serve_folder(folder) as url:
        with pytest.raises(FileNotFoundError, match="train-000009.tar does not exist"):
            resolve_source(f"{url}/train-{{000009..000010}}.tar", "train")
        with pytest.raises(FileNotFoundError, match="no manifest at .*/gone.json"):
            resolve_source(f"{url}/gone.json", "train")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"cannot reach http://127.0.0.1:{port}/train-000000.tar"):
        resolve_source(f"http://127.0.0.1:{port}/train-000000.tar", "train")
    with pytest.raises(ConnectionError, match=f"cannot reach http://127.0.0.1:{port}/val.json"):
        resolve_source(f"http://127.0.0.1:{port}", "val")


def test_an_object_store_without_its_package_names_the_url_and_the_extra(monkeypatch):
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed: gs:// URLs would be read")
    with pytest.raises(ValueError, match=r"gs://bucket/shards/: .*gcsfs.*pip install 'sifar\[gcs\]'"):
        resolve_source("gs://bucket/shards/", "train")


def test_storage_errors_name_the_url_keep_their_kind_and_mask_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    denied = storage_error("s3://b/p/train.json", PermissionError("signature of s3cr3t-value does not match"),
                           "shard source 's3://b/p'")
    assert isinstance(denied, PermissionError) and "s3cr3t-value" not in str(denied)
    assert str(denied).startswith("shard source 's3://b/p': access to s3://b/p/train.json denied (signature of ***")
    assert "AWS_ACCESS_KEY_ID" in str(denied)
    assert isinstance(storage_error("s3://b/x", FileNotFoundError("The specified bucket does not exist")),
                      FileNotFoundError)
    assert str(storage_error("s3://b/x", TimeoutError())).startswith(
        "cannot reach s3://b/x (timed out; deadlines: connect 10 s (SIFAR_CONNECT_TIMEOUT), read 10 s")
    assert str(storage_error("s3://b/x", OSError())) == "cannot reach s3://b/x (OSError)"


def test_local_shards_open_for_positioned_reads(tmp_path):
    data = bytes(range(256)) * 8
    (tmp_path / "a.tar").write_bytes(data)
    with open_shard(f"file://{tmp_path / 'a.tar'}") as shard:
        assert shard.seekable() and shard.readable()
        assert shard.read(10) == data[:10] and shard.tell() == 10
        assert shard.seek(5, os.SEEK_CUR) == 15 and shard.read(3) == data[15:18]
        assert shard.seek(-4, os.SEEK_END) == len(data) - 4 and shard.read() == data[-4:]
        assert shard.read(10) == b""  # at the end
        shard.seek(100)
        into = bytearray(6)
        assert shard.readinto(into) == 6 and bytes(into) == data[100:106] and shard.tell() == 106
        with pytest.raises(ValueError, match="a.tar: cannot seek to byte -1"):
            shard.seek(-1)
        with pytest.raises(ValueError, match="a.tar: invalid whence 7"):
            shard.seek(0, 7)
    assert shard.closed
    with pytest.raises(FileNotFoundError):
        open_shard(str(tmp_path / "missing.tar"))


@pytest.mark.timeout(60)
def test_a_server_that_never_answers_fails_within_the_read_timeout_naming_the_url(monkeypatch):
    monkeypatch.setenv("SIFAR_READ_TIMEOUT", "0.5")
    with silent_server() as url:
        for source, named in ((f"{url}/val.json", f"{url}/val.json"), (url, f"{url}/val.json"),
                              (f"{url}/val-000000.tar", f"{url}/val-000000.tar")):
            with pytest.raises(ConnectionError, match=f"cannot reach {named}.*timed out; .*read 0.5 s"):
                resolve_source(source, "val")


def test_deadlines_come_from_the_environment_and_fsspec_settings_win(monkeypatch):
    fsspec = pytest.importorskip("fsspec")
    monkeypatch.setenv("SIFAR_CONNECT_TIMEOUT", "3")
    monkeypatch.setenv("SIFAR_READ_TIMEOUT", "7.5")
    expected = NetworkDeadlines(connect_timeout=3, read_timeout=7.5, probe_timeout=60)
    assert NetworkDeadlines.from_environment() == expected
    monkeypatch.setitem(fsspec.config.conf, "s3", {"config_kwargs": {"read_timeout": 99}, "anon": True})
    assert storage_options("s3://bucket/x") == {"anon": True, "config_kwargs": {
        "connect_timeout": 3, "read_timeout": 99, "retries": {"total_max_attempts": 1}}}
    timeout = storage_options("https://host/x.tar")["client_kwargs"]["timeout"]
    assert (timeout.total, timeout.sock_connect, timeout.sock_read) == (None, 3, 7.5)
    assert storage_options("/local/x.tar") == {}
    for value in ("soon", "0", "-1"):
        monkeypatch.setenv("SIFAR_READ_TIMEOUT", value)
        with pytest.raises(ValueError, match=f"SIFAR_READ_TIMEOUT.*{value}"):
            NetworkDeadlines.from_environment()
