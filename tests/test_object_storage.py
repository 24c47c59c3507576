"""Shards in object storage, end to end against real servers on 127.0.0.1: moto's S3 server (sharding to it,
inspect, training and evaluation streaming from it, resume from what the bucket holds), a proxy in front of
it that breaks chosen requests, and ``http.server`` for HTTP sources."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import shutil
import logging
import re
import tarfile
import threading
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
from video_files import make_video
import s3fs
from click.testing import CliRunner, Result
from moto.server import ThreadedMotoServer
from shard_files import serve_folder, silent_server

from sifar.cli.evaluate import main as eval_main
from sifar.cli.tools import main as sifar_tools
from sifar.cli.train import main as train_main
from sifar.data.loader_stats import BadDataWarning
from sifar.data.manifest import read_manifest
from sifar.data.sources import resolve_source
from sifar.data.synth import SynthConfig, make_dataset

BUCKET = "sifar-shards"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TINY = ["--model", "SIFAR-N-6", "--frame-size", "32", "--batch-size", "4", "--workers", "0"]
SHARD = ["shard", "--dataset", "csv", "--short-side", "0", "--samples-per-shard", "2", "--workers", "2",
         "--no-progress"]


def point_s3_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, key: str = "test", secret: str = SECRET) -> None:
    """The standard AWS environment, as a user sets it; s3fs clients made before read the old one."""
    for name, value in {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server_log = logging.getLogger("werkzeug")  # moto's server logs every request at INFO
    server_log_level = server_log.level
    server_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        point_s3_at(monkeypatch, endpoint)
        s3fs.S3FileSystem().mkdir(BUCKET)
        yield endpoint
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()
    server_log.setLevel(server_log_level)


@pytest.fixture(autouse=True)
def fresh_s3_clients() -> Iterator[None]:
    """Tests change the environment; clients cached by another test must not outlive it."""
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    config = SynthConfig(out=tmp_path_factory.mktemp("synth"), videos=20, classes=("move_right", "move_left", "grow"),
                         frames=12, width=48, height=48, val_fraction=0.3, workers=2)
    make_dataset(config, progress=False)
    return config.out


@pytest.fixture(scope="module")
def bucket(s3_endpoint, videos, tmp_path_factory) -> dict[str, str | Path]:
    """train and val sharded straight into s3://BUCKET/synth/, and a local copy of what the bucket holds."""
    url = f"s3://{BUCKET}/synth/"
    for split in ("train", "val"):
        result = tools(*SHARD, "--src", str(videos), "--output", url, "--split", split)
        assert result.exit_code == 0, result.output
        assert f"-> {url.rstrip('/')}/{split}.json" in result.output
    local = tmp_path_factory.mktemp("local_copy")
    s3fs.S3FileSystem().get(f"{BUCKET}/synth/", f"{local}/", recursive=True)
    return {"url": url, "local": local}


def tools(*args: str) -> Result:
    return CliRunner().invoke(sifar_tools, list(args))


def evaluate(shards: str, checkpoint: Path, output: Path, *extra: str) -> dict:
    result = CliRunner().invoke(eval_main, ["--shards", shards, "--checkpoint", str(checkpoint), "--split", "val",
                                            "--crops", "1", "--workers", "0", "--batch-size", "4",
                                            "--output", str(output), *extra])
    assert result.exit_code == 0, result.output
    return json.loads((output / "report.json").read_text())


def totals(report: dict) -> dict:
    return {name: report[name] for name in ("top1", "top5", "num_samples", "per_class", "confusion")}


def shard_table(manifest_url: str | Path) -> list[tuple[str, int, int, int]]:
    return [(s.name, s.samples, s.frames, s.bytes) for s in read_manifest(manifest_url).shards]


# ---- writing shards to a bucket --------------------------------------------------------------------------


def test_sharding_to_a_bucket_writes_the_same_files_as_to_a_folder(bucket, videos, tmp_path):
    folder = tmp_path / "folder"
    for split in ("train", "val"):
        assert tools(*SHARD, "--src", str(videos), "--output", str(folder), "--split", split).exit_code == 0
    local = bucket["local"]
    run_locks = {".train.lock", ".val.lock"}   # a local folder's run locks (sifar.run_lock); a bucket has none
    kept = sorted(p.name for p in folder.iterdir() if p.name not in run_locks)
    assert sorted(p.name for p in local.iterdir()) == kept
    assert run_locks <= {p.name for p in folder.iterdir()}
    for name in ("train.json", "val.json"):
        assert shard_table(local / name) == shard_table(folder / name)
    for shard in folder.glob("*.tar"):
        assert tar_members(local / shard.name) == tar_members(shard)  # equal but for the tar headers' mtime
    assert len(read_manifest(local / "val.json").shards) == 3
    assert not list(Path(bucket["local"]).glob("*.tmp"))


def test_parts_sharded_into_a_bucket_merge_there(bucket, videos):
    url = f"s3://{BUCKET}/parts/"
    for part in range(2):
        result = tools(*SHARD, "--src", str(videos), "--output", url, "--split", "train", "--num-parts", "2",
                       "--part", str(part))
        assert result.exit_code == 0, result.output
    merged = tools("merge", url, "--split", "train")
    assert merged.exit_code == 0 and f"of 2 parts -> {url.rstrip('/')}/train.json" in merged.output, merged.output
    whole = read_manifest(Path(bucket["local"]) / "train.json")
    parts = read_manifest(f"{url}train.json")
    assert (parts.num_samples, parts.num_frames, parts.classes) == (whole.num_samples, whole.num_frames, whole.classes)
    assert tools("inspect", url).exit_code == 0


def split_contents(folder: Path, split: str) -> dict[str, tuple[int, list[bytes]]]:
    """key -> (label, frame bytes) of a sharded split, read with plain tarfile."""
    contents = {}
    for info in read_manifest(folder / f"{split}.json").shards:
        members = dict(tar_members(folder / info.name))
        for name, data in members.items():
            if name.endswith(".json"):
                key = name[:-len(".json")]
                frames = [members[m] for m in sorted(members) if m.startswith(f"{key}.") and m.endswith(".jpg")]
                contents[key] = (json.loads(data)["label"], frames)
    return contents


def test_raw_videos_in_a_bucket_shard_as_the_local_copy_does(s3_endpoint, videos, tmp_path):
    """--src s3://...: the list read from the bucket, each video streamed to ffmpeg (presigned HTTPS, range
    requests), a broken one recorded like a local broken one."""
    raw = tmp_path / "raw"
    shutil.copytree(videos, raw)
    (raw / "videos" / "broken.mp4").write_bytes(b"not a video at all")
    listed = (raw / "train.csv").read_text().splitlines()
    path, rest = listed[-1].split(",", 1)
    (raw / "train.csv").write_text("\n".join([*listed, f"videos/broken.mp4,{rest}"]) + "\n")  # boxes and all
    url = f"s3://{BUCKET}/raw"
    s3fs.S3FileSystem().put(str(raw), f"{BUCKET}/raw", recursive=True)
    folders = {"bucket": tmp_path / "from_bucket", "local": tmp_path / "from_local"}
    for source, out in (("bucket", folders["bucket"]), ("local", folders["local"])):
        result = tools(*SHARD, "--src", url if source == "bucket" else str(raw), "--output", str(out),
                       "--max-failures", "0.1")
        assert result.exit_code == 0, result.output
    assert split_contents(folders["bucket"], "train") == split_contents(folders["local"], "train")
    errors = [json.loads(line) for line in (folders["bucket"] / "train-errors.jsonl").read_text().splitlines()]
    assert [error["source"] for error in errors] == ["videos/broken.mp4"]
    missing = tools(*SHARD, "--src", f"s3://{BUCKET}/nothing-here", "--output", str(tmp_path / "none"))
    assert missing.exit_code == 1 and "train.csv" in missing.output


def test_a_list_of_video_urls_shards_the_videos_they_name(bucket, videos, tmp_path):
    """Paths in a csv list may be URLs: s3:// (presigned for ffmpeg) and http:// (a loopback server)."""
    listed = [line.split(",", 1) for line in (videos / "train.csv").read_text().splitlines()[1:3]]
    s3fs.S3FileSystem().put(str(videos / listed[0][0]), f"{BUCKET}/listed/{Path(listed[0][0]).name}")
    src = tmp_path / "list"
    src.mkdir()
    with serve_folder(videos) as base:
        urls = [f"s3://{BUCKET}/listed/{Path(listed[0][0]).name}", f"{base}/{listed[1][0]}"]
        (src / "train.csv").write_text("path,label,boxes\n" + "".join(
            f"{url},{rest}\n" for url, (_, rest) in zip(urls, listed)))
        result = tools(*SHARD, "--src", str(src), "--output", str(tmp_path / "shards"))
    assert result.exit_code == 0, result.output
    local = tmp_path / "local"
    local.mkdir()
    (local / "train.csv").write_text("path,label,boxes\n" + "".join(f"{path},{rest}\n" for path, rest in listed))
    (local / "videos").symlink_to(videos / "videos")
    assert tools(*SHARD, "--src", str(local), "--output", str(tmp_path / "local_shards")).exit_code == 0
    from_urls = sorted(frames for _, frames in split_contents(tmp_path / "shards", "train").values())
    from_files = sorted(frames for _, frames in split_contents(tmp_path / "local_shards", "train").values())
    assert len(from_urls) == 2 and from_urls == from_files   # the same frames, byte for byte


def test_a_dataset_served_over_http_shards_as_its_folder(videos, tmp_path):
    """--src http://...: a server that lists its folders (here Python's, on the loopback) is walked like a disk."""
    with serve_folder(videos) as base:
        result = tools(*SHARD, "--src", f"{base}/", "--output", str(tmp_path / "from_http"))
    assert result.exit_code == 0, result.output
    assert tools(*SHARD, "--src", str(videos), "--output", str(tmp_path / "from_folder")).exit_code == 0
    assert split_contents(tmp_path / "from_http", "train") == split_contents(tmp_path / "from_folder", "train")


def test_a_shipped_dataset_layout_in_a_bucket_is_found_as_on_disk(s3_endpoint, tmp_path):
    """Kinetics-400 as it ships (annotation CSVs, videos in class folders) walked in the bucket."""
    raw = tmp_path / "k400"
    (raw / "annotations").mkdir(parents=True)
    (raw / "annotations" / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                                   "zumba,aaa,0,10,train\nabseiling,bbb,5,15,train\n")
    for label, stem in (("zumba", "aaa_000000_000010"), ("abseiling", "bbb_000005_000015")):
        make_video(raw / "train" / label / f"{stem}.mp4", frames=3)
    s3fs.S3FileSystem().put(str(raw), f"{BUCKET}/k400", recursive=True)
    out = tmp_path / "shards"
    result = tools("shard", "--dataset", "kinetics400", "--src", f"s3://{BUCKET}/k400", "--output", str(out),
                   "--short-side", "16", "--workers", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out / "train.json")
    assert (manifest.classes, manifest.num_samples) == (["abseiling", "zumba"], 2)
    sources = {json.loads(data)["source"] for info in manifest.shards
               for name, data in tar_members(out / info.name) if name.endswith(".json")}
    assert sources == {"train/zumba/aaa_000000_000010.mp4", "train/abseiling/bbb_000005_000015.mp4"}


def test_an_interrupted_upload_is_resumed_from_what_the_bucket_holds(bucket, videos, s3_endpoint, monkeypatch):
    """The manifest's upload is refused: every shard is already in the bucket; --resume keeps them."""
    url = f"s3://{BUCKET}/resumed/"
    with faulty_proxy(s3_endpoint, deny_puts={"resumed/train.json"}) as proxy:
        point_s3_at(monkeypatch, proxy.endpoint)
        failed = tools(*SHARD, "--src", str(videos), "--output", url)
    assert failed.exit_code == 1
    assert f"access to {url}train.json denied" in failed.output and SECRET not in failed.output
    point_s3_at(monkeypatch, s3_endpoint)
    client = s3fs.S3FileSystem()
    uploaded = sorted(p.rsplit("/", 1)[1] for p in client.find(f"{BUCKET}/resumed/"))
    reference = shard_table(f"{bucket['url']}train.json")
    assert uploaded == sorted([name for name, *_ in reference] + [".train-run.json", "train-errors.jsonl"])
    last = reference[-1]
    client.rm_file(f"{BUCKET}/resumed/{last[0]}")  # as if the run had stopped before uploading it

    resumed = tools(*SHARD, "--src", str(videos), "--output", url, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"kept {14 - last[1]} videos in {len(reference) - 1} finished shards" in resumed.output
    assert f"decoded {last[1]} videos" in resumed.output
    assert shard_table(f"{url}train.json") == reference


def test_a_missing_bucket_fails_before_any_video_is_decoded(s3_endpoint, videos):
    result = tools(*SHARD, "--src", str(videos), "--output", "s3://no-such-bucket/shards/")
    assert result.exit_code == 1
    assert "s3://no-such-bucket/shards/: bucket 'no-such-bucket' does not exist" in result.output
    assert "decoded" not in result.output


def test_http_is_refused_as_an_output(videos):
    result = tools(*SHARD, "--src", str(videos), "--output", "https://data.example.org/shards/")
    assert result.exit_code == 1
    assert "cannot write shards to https://data.example.org/shards/: HTTP(S) is read-only" in result.output


# ---- reading from a bucket and over HTTP -----------------------------------------------------------------


def test_inspect_reads_the_bucket_like_the_local_copy(bucket):
    remote = tools("inspect", bucket["url"])
    assert remote.exit_code == 0, remote.output
    local = tools("inspect", str(bucket["local"]))
    assert remote.output.replace(bucket["url"].rstrip("/"), "X") == local.output.replace(str(bucket["local"]), "X")
    assert "7 shards checked: all readable" in remote.output and "3 shards checked: all readable" in remote.output
    manifest = tools("inspect", f"{bucket['url']}val.json")
    assert manifest.exit_code == 0 and "6 samples" in manifest.output


@pytest.fixture(scope="module")
def checkpoint(bucket, tmp_path_factory) -> Path:
    """A short training that streams its training and validation shards from the bucket."""
    output = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(train_main, ["--shards", bucket["url"], "--val-shards", f"{bucket['url']}val.json",
                                             "--output", str(output), "--epochs", "1", "--steps-per-epoch", "2",
                                             *TINY])
    assert result.exit_code == 0, result.output
    return output / "last.pt"


def test_training_and_evaluation_stream_from_the_bucket_with_the_local_totals(bucket, checkpoint, tmp_path):
    summary = json.loads((checkpoint.parent / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["loader"]["samples"] == 8
    epoch = next(json.loads(line) for line in (checkpoint.parent / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["kind"] == "epoch")
    assert epoch["num_samples"] == 6
    remote = evaluate(f"{bucket['url']}val-{{000000..000002}}.tar", checkpoint, tmp_path / "remote")
    local = evaluate(str(bucket["local"]), checkpoint, tmp_path / "local")
    assert remote["num_samples"] == 6 and totals(remote) == totals(local)


def test_http_sources_evaluate_like_the_local_copy(bucket, checkpoint, tmp_path):
    local = evaluate(str(bucket["local"] / "val.json"), checkpoint, tmp_path / "local")
    with serve_folder(bucket["local"]) as url:
        braces = evaluate(f"{url}/val-{{000000..000002}}.tar", checkpoint, tmp_path / "braces")
        inspected = tools("inspect", f"{url}/val.json")
    assert totals(braces) == totals(local)
    assert inspected.exit_code == 0 and "3 shards checked: all readable" in inspected.output


def test_failed_downloads_are_retried_and_a_dead_shard_is_skipped_and_reported(bucket, checkpoint, s3_endpoint,
                                                                                monkeypatch, tmp_path):
    """val-000000.tar breaks off mid-body 3 times, val-000001.tar every time; s3fs tries each read twice
    (its ``retries`` setting), the loader re-opens a shard twice (its default)."""
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 2)
    cut = {"synth/val-000000.tar": 3, "synth/val-000001.tar": None}  # None: every time
    with faulty_proxy(s3_endpoint, cut_gets=cut) as proxy:
        point_s3_at(monkeypatch, proxy.endpoint)
        with pytest.warns(BadDataWarning, match="val-000001.tar"):
            flaky = evaluate(bucket["url"], checkpoint, tmp_path / "flaky", "--allow-partial")
    assert proxy.gets == {"synth/val-000000.tar": 4, "synth/val-000001.tar": 6, "synth/val-000002.tar": 1}
    assert flaky["loader"]["broken_shards"] == 1 and flaky["loader"]["shard_retries"] == 1 + 2
    dead = {name.split(".")[0] for name in tar_names(bucket["local"] / "val-000001.tar")}
    labels = Counter(label for key, label in val_labels(bucket["local"]).items() if key not in dead)
    assert flaky["num_samples"] == 6 - len(dead) == 4
    assert (flaky["expected"], flaky["evaluated"], flaky["skipped"]) == (6, 4, 0)
    assert flaky["short_shards"] == [{"shard": f"{bucket['url']}val-000001.tar", "expected": 2, "read": 0}]
    assert [sum(row) for row in flaky["confusion"]] == [labels[c] for c in range(3)]


# ---- refused access --------------------------------------------------------------------------------------


def test_a_missing_bucket_fails_at_once_naming_the_url(s3_endpoint, checkpoint, tmp_path):
    url = "s3://no-such-bucket/synth/"
    for result in (tools("inspect", url),
                   CliRunner().invoke(train_main, ["--shards", url, "--output", str(tmp_path / "run"), *TINY]),
                   CliRunner().invoke(eval_main, ["--shards", url, "--checkpoint", str(checkpoint)])):
        assert result.exit_code == 1
        assert f"{url}: bucket 'no-such-bucket' does not exist" in result.output
    braces = "s3://no-such-bucket/synth/val-{000000..000002}.tar"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{braces}: bucket 'no-such-bucket' does not exist")):
        resolve_source(braces, "val")


def test_bad_credentials_fail_at_once_naming_the_url_and_no_secret(bucket, s3_endpoint, monkeypatch, tmp_path):
    wrong_secret = "AnotherSecretThatMustNotBeShown/0123456789"
    point_s3_at(monkeypatch, s3_endpoint, key="AKIAWRONGKEY", secret=wrong_secret)
    with moto_checks_credentials(s3_endpoint):
        results = [tools("inspect", bucket["url"]),
                   tools(*SHARD, "--src", str(tmp_path), "--output", f"s3://{BUCKET}/denied/"),
                   CliRunner().invoke(train_main, ["--shards", bucket["url"], "--output", str(tmp_path / "run"),
                                                   *TINY])]
        with pytest.raises(PermissionError, match=f"access to {bucket['url']}.* denied") as refused:
            resolve_source(f"{bucket['url']}val.json", "val")
    for result in results:
        assert result.exit_code == 1
        assert f"access to s3://{BUCKET}/" in result.output and "AWS_ACCESS_KEY_ID" in result.output
        assert wrong_secret not in result.output
    assert wrong_secret not in str(refused.value)


@pytest.mark.timeout(120)
def test_an_endpoint_that_never_answers_fails_within_the_deadlines_naming_the_url(checkpoint, videos, monkeypatch,
                                                                                 tmp_path):
    monkeypatch.setenv("SIFAR_READ_TIMEOUT", "0.3")
    monkeypatch.setenv("SIFAR_PROBE_TIMEOUT", "3")
    url = f"s3://{BUCKET}/synth/"
    with silent_server() as endpoint:
        point_s3_at(monkeypatch, endpoint)
        results = [tools("inspect", url),
                   tools(*SHARD, "--src", str(videos), "--output", url),
                   CliRunner().invoke(train_main, ["--shards", url, "--output", str(tmp_path / "run"), *TINY]),
                   CliRunner().invoke(eval_main, ["--shards", url, "--checkpoint", str(checkpoint)])]
    for result in results:
        assert result.exit_code == 1, result.output
        assert f"cannot reach s3://{BUCKET}/" in result.output and "timed out" in result.output, result.output


# ---- helpers: a proxy that breaks requests, moto's credential checks --------------------------------------


@contextlib.contextmanager
def moto_checks_credentials(endpoint: str) -> Iterator[None]:
    """moto accepts any credentials unless told otherwise (its server's /moto-api/reset-auth)."""
    def reset_auth(count: str) -> None:
        request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).read()

    reset_auth("0")
    try:
        yield
    finally:
        reset_auth("inf")


class _Proxy(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, cut_gets: dict[str, int | None], deny_puts: set[str]):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream.removeprefix("http://")
        self.cut_gets, self.deny_puts = dict(cut_gets), set(deny_puts)
        self.gets: Counter = Counter()
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fault_for(self, method: str, path: str) -> str | None:
        """"cut" (half the body, then hang up), "deny" (403) or None, counting GETs of faulty objects."""
        key = path.split("?", 1)[0].removeprefix(f"/{BUCKET}/")
        with self.lock:
            if method == "PUT" and key in self.deny_puts:
                return "deny"
            if method != "GET" or key not in self.cut_gets and not key.endswith(".tar"):
                return None
            self.gets[key] += 1
            limit = self.cut_gets.get(key, 0)
            return "cut" if limit is None or self.gets[key] <= limit else None


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """Forwards each request to the S3 server, unless the proxy's fault plan says otherwise."""

    server: _Proxy
    protocol_version = "HTTP/1.1"  # answers botocore's "Expect: 100-continue" before it sends a PUT's body

    def do_request(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        fault = self.server.fault_for(self.command, self.path)
        if fault == "deny":
            self._reply(403, {"Content-Type": "application/xml"},
                        b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")
            return
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        upstream.request(self.command, self.path, body,
                         {k: v for k, v in self.headers.items() if k.lower() not in ("host", "expect")})
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        headers = {k: v for k, v in response.getheaders() if k.lower() not in ("transfer-encoding", "connection")}
        length = int(response.getheader("Content-Length", len(data)))  # a HEAD's tells the object's size
        self._reply(response.status, headers, data[:len(data) // 2] if fault == "cut" else data, length)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_request

    def _reply(self, status: int, headers: dict, data: bytes, length: int | None = None) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    def log_message(self, format, *args):  # the base class names it format
        pass


@contextlib.contextmanager
def faulty_proxy(upstream: str, cut_gets: dict[str, int | None] | None = None,
                 deny_puts: set[str] = frozenset()) -> Iterator[_Proxy]:
    """A proxy on 127.0.0.1 in front of ``upstream``: GETs of ``cut_gets`` objects are cut off half-way the
    first N times (None: always), PUTs of ``deny_puts`` objects are refused; GETs of shards are counted."""
    proxy = _Proxy(upstream, cut_gets or {}, deny_puts)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


def tar_names(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def tar_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(member.name, tar.extractfile(member).read()) for member in tar]


def val_labels(folder: Path) -> dict[str, int]:
    labels = {}
    for shard in sorted(folder.glob("val-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    labels[meta["key"]] = meta["label"]
    return labels
