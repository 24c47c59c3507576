"""Fault injection: kill, damage and stall sifar's commands at random, and check that nothing is lost silently.

Every run is a real process of the installed commands (``sifar-tools``, ``sifar-train``, ``sifar-eval``) on a
small synthetic dataset; faults are real too: ``kill -9`` of the whole process group at a random moment,
shard files emptied, cut at a random byte, bit-flipped or deleted, an HTTP server that stalls mid-body,
endpoints that accept connections and never answer. The invariants checked:

    shard-kill          after a kill and ``--resume``: every video in the shards exactly once, the
                        manifest's counts right, ``sifar-tools inspect`` clean, no temporary file
    train-kill          after a kill and the same command again: every step in metrics.jsonl once, with the
                        losses of an uninterrupted run, no temporary file
    damaged-shards      ``sifar-eval`` either evaluates as many videos as the manifest lists or fails
                        (exit 1) naming the damaged shard; never a partial result with exit 0
    stalls              a stalled body or a silent endpoint (default deadlines) fails within 2 minutes
                        naming the URL; no hang
    one-run-per-folder  a second training or sharding run into a folder in use fails at once; the first
                        finishes whole

Each command runs under a timeout (a hang is a failed invariant). Prints one table (markdown).

    python -m tools.chaos --trials 10 --seed 0
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from contextlib import contextmanager
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from sifar.data.manifest import read_manifest

EPOCHS, STEPS_PER_EPOCH = 3, 12
TINY_TRAINING = ["--model", "SIFAR-N-6", "--frame-size", "32", "--batch-size", "4", "--workers", "0",
                 "--epochs", str(EPOCHS), "--steps-per-epoch", str(STEPS_PER_EPOCH), "--save-every", "5",
                 "--warmup-epochs", "0.5", "--lr", "1e-3"]
COMMAND_TIMEOUT = 300
NETWORK_BOUND = 120  # seconds within which a silent endpoint must fail


@dataclass
class Outcome:
    """One scenario's tally: trials run, faults actually injected, trials whose invariant held, notes."""

    scenario: str
    invariant: str
    trials: int = 0
    faults: int = 0
    mid_work: int | None = None  # kills that came after the work had begun (shards written, steps logged)
    held: int = 0
    notes: list[str] = field(default_factory=list)

    def record(self, held: bool, note: str = "", fault: bool = True, mid_work: bool | None = None) -> None:
        self.trials += 1
        self.faults += fault
        if mid_work is not None:
            self.mid_work = (self.mid_work or 0) + (fault and mid_work)
        self.held += held
        if note and (not held or len(self.notes) < 12):
            self.notes.append(("" if held else "VIOLATED: ") + note)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="trials of each random scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", default="shard-kill,train-kill,damaged-shards,stalls,one-run-per-folder")
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given [default: a temporary one]")
    return parser.parse_args()


# ---- processes ------------------------------------------------------------------------------------------


def command(*args: str, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT
            ) -> tuple[subprocess.CompletedProcess, float]:
    """Run a sifar command to its end; (result, seconds). A timeout is reported as exit code 124."""
    started = time.monotonic()
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as err:
        result = subprocess.CompletedProcess(args, 124, err.stdout or "", f"timed out after {timeout} s")
    return result, time.monotonic() - started


def killed_at_random(args: list[str], moment: float) -> bool:
    """Start ``args`` in its own process group and ``kill -9`` the group after ``moment`` seconds; False when it
    ended by itself first."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout=moment)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        return True


def kill_moment(rng: random.Random, run_seconds: float) -> float:
    """A random moment in the last 60% of an uninterrupted run (the first 40% is mostly Python and torch
    starting up, where a kill finds nothing to lose)."""
    return rng.uniform(0.4, 1.0) * run_seconds


def temporary_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(".tmp"))


# ---- data -----------------------------------------------------------------------------------------------


def shard_args(src: Path, out: Path, split: str, *extra: str) -> list[str]:
    return ["sifar-tools", "shard", "--dataset", "csv", "--src", str(src), "--output", str(out), "--split", split,
            "--samples-per-shard", "3", "--short-side", "0", "--workers", "2", "--no-progress", *extra]


def keys_in_shards(folder: Path, split: str) -> list[str]:
    """Sample keys of every shard of ``split``, read with plain tarfile (not sifar's reader)."""
    keys = []
    for shard in sorted(folder.glob(f"{split}-*.tar")):
        with tarfile.open(shard) as tar:
            keys += [member.name[:-len(".json")] for member in tar if member.name.endswith(".json")]
    return keys


def make_data(work: Path) -> dict[str, object]:
    videos = work / "videos"
    result, _ = command("sifar-tools", "synth", "--output", str(videos), "--videos", "40", "--frames", "24",
                        "--size", "96x72", "--classes", "4", "--workers", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    shards = work / "shards"
    seconds = 0.0
    for split in ("train", "val"):
        result, took = command(*shard_args(videos, shards, split))
        assert result.returncode == 0, result.stderr
        seconds = max(seconds, took)
    reference = work / "train_reference"
    result, train_seconds = command("sifar-train", "--shards", str(shards), "--val-shards", str(shards),
                                    "--output", str(reference), *TINY_TRAINING)
    assert result.returncode == 0, result.stderr
    return {"videos": videos, "shards": shards, "shard_seconds": seconds, "reference": reference,
            "train_seconds": train_seconds}


def step_losses(output: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "step"]


# ---- scenarios ------------------------------------------------------------------------------------------


def shard_kill(data: dict, work: Path, trials: int, rng: random.Random) -> Outcome:
    outcome = Outcome("shard-kill", "every video once, manifest right, inspect clean, no temporary file")
    expected = sorted(keys_in_shards(data["shards"], "train"))
    for trial in range(trials):
        out = work / "shard_kill" / str(trial)
        moment = kill_moment(rng, data["shard_seconds"])
        fault = killed_at_random(shard_args(data["videos"], out, "train"), moment)
        written = len(list(out.glob("train-*.tar")))
        resumed, _ = command(*shard_args(data["videos"], out, "train", "--resume"))
        inspected, _ = command("sifar-tools", "inspect", str(out))
        keys = keys_in_shards(out, "train")
        manifest = read_manifest(out / "train.json") if (out / "train.json").exists() else None
        held = (resumed.returncode == 0 and inspected.returncode == 0 and sorted(keys) == expected
                and manifest is not None and sum(s.samples for s in manifest.shards) == len(expected)
                and not temporary_files(out))
        outcome.record(held, f"killed at {moment:.1f} s ({written} shards written): {len(keys)} keys "
                             f"({len(set(keys))} distinct) of {len(expected)}, temporary files "
                             f"{temporary_files(out)}", fault, mid_work=written > 0)
    return outcome


def train_kill(data: dict, work: Path, trials: int, rng: random.Random) -> Outcome:
    outcome = Outcome("train-kill", "each step once with the uninterrupted run's losses, no temporary file")
    reference = step_losses(data["reference"])
    for trial in range(trials):
        out = work / "train_kill" / str(trial)
        args = ["sifar-train", "--shards", str(data["shards"]), "--val-shards", str(data["shards"]),
                "--output", str(out), *TINY_TRAINING]
        moment = kill_moment(rng, data["train_seconds"])
        fault = killed_at_random(args, moment)
        logged = len(step_losses(out)) if (out / "metrics.jsonl").exists() else 0
        again, _ = command(*args)
        losses = step_losses(out) if again.returncode == 0 else []
        same = ([s for s, _ in losses] == [s for s, _ in reference]
                and all(abs(a - b) <= 1e-6 + 1e-5 * abs(b) for (_, a), (_, b) in zip(losses, reference)))
        held = again.returncode == 0 and same and not temporary_files(out)
        outcome.record(held, f"killed at {moment:.1f} s ({logged} steps logged): {again.returncode=}, "
                             f"steps {[s for s, _ in losses][:3]}..., same losses {same}", fault, mid_work=logged > 0)
    return outcome


def _empty(shard: Path, rng: random.Random) -> str:
    shard.write_bytes(b"")
    return ""


def _delete(shard: Path, rng: random.Random) -> str:
    shard.unlink()
    return ""


def _cut(shard: Path, rng: random.Random) -> str:
    data = shard.read_bytes()
    at = rng.randrange(len(data))
    shard.write_bytes(data[:at])
    return f" at byte {at} of {len(data)}"


def _flip(shard: Path, rng: random.Random) -> str:
    data = bytearray(shard.read_bytes())
    at, bit = rng.randrange(len(data)), rng.randrange(8)
    data[at] ^= 1 << bit
    shard.write_bytes(bytes(data))
    return f" bit {bit} of byte {at}"


DAMAGES: dict[str, Callable[[Path, random.Random], str]] = {"emptied": _empty, "truncated": _cut,
                                                            "bit-flipped": _flip, "deleted": _delete}


def damaged_shards(data: dict, work: Path, trials: int, rng: random.Random) -> Outcome:
    outcome = Outcome("damaged-shards", "evaluated == manifest, or exit 1 naming the damaged shard")
    checkpoint = data["reference"] / "last.pt"
    kinds = list(DAMAGES)
    results: Counter = Counter()
    for trial in range(trials * len(kinds)):
        folder = work / "damaged" / str(trial)
        folder.mkdir(parents=True)
        for path in data["shards"].glob("val*"):
            shutil.copy(path, folder / path.name)
        shard = rng.choice(sorted(folder.glob("val-*.tar")))
        kind = kinds[trial % len(kinds)]
        where = DAMAGES[kind](shard, rng)
        result, _ = command("sifar-eval", "--shards", str(folder), "--checkpoint", str(checkpoint), "--split", "val",
                            "--workers", "2", "--batch-size", "4", "--output", str(folder / "eval"))
        report_file = folder / "eval" / "report.json"
        if result.returncode == 0 and report_file.exists():
            report = json.loads(report_file.read_text())
            held = report["evaluated"] == report["expected"]
            results[kind, "evaluated all"] += 1
            note = f"{kind} {shard.name}{where}: complete, {report['evaluated']} of {report['expected']}"
        else:
            held = result.returncode == 1 and shard.name in result.stdout + result.stderr
            results[kind, "exit 1 naming the shard" if held else f"exit {result.returncode}"] += 1
            note = f"{kind} {shard.name}{where}: exit {result.returncode}, " + (
                "names the shard" if held else (result.stderr or result.stdout)[-300:])
        outcome.record(held, note)
    outcome.notes.append("outcomes: " + ", ".join(f"{kind} -> {result}: {count}"
                                                   for (kind, result), count in sorted(results.items())))
    return outcome


def stalls(data: dict, work: Path, trials: int, rng: random.Random) -> Outcome:
    outcome = Outcome("stalls", f"fails within {NETWORK_BOUND} s naming the URL, no hang")
    checkpoint = str(data["reference"] / "last.pt")
    evaluate = ["sifar-eval", "--checkpoint", checkpoint, "--split", "val", "--workers", "0", "--batch-size", "4"]
    with stalling_server(data["shards"], stall="val-000001.tar") as url:
        result, seconds = command(*evaluate, "--shards", f"{url}/val.json", env={"SIFAR_READ_TIMEOUT": "2"},
                                  timeout=NETWORK_BOUND)
        named = f"{url}/val-000001.tar" in result.stdout + result.stderr
        outcome.record(result.returncode == 1 and named and seconds < NETWORK_BOUND,
                       f"HTTP body stalled mid-shard (read timeout 2 s): exit {result.returncode} in {seconds:.0f} s")
    with silent_endpoint() as endpoint:
        probes = {"HTTP": ({}, f"{endpoint}/val.json")}
        if _installed("s3fs"):
            probes["S3"] = ({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "chaos", "AWS_SECRET_ACCESS_KEY": "x",
                             "AWS_DEFAULT_REGION": "us-east-1"}, "s3://chaos-bucket/val/")
        if _installed("gcsfs"):
            probes["GCS"] = ({"STORAGE_EMULATOR_HOST": endpoint, "FSSPEC_GS": '{"token": "anon"}'},
                             "gs://chaos-bucket/val/")
        for store, (env, source) in probes.items():
            result, seconds = command(*evaluate, "--shards", source, env=env, timeout=NETWORK_BOUND + 60)
            named = f"cannot reach {source}" in result.stdout + result.stderr
            outcome.record(result.returncode == 1 and named and seconds < NETWORK_BOUND,
                           f"{store} endpoint never answers (default deadlines): exit {result.returncode} "
                           f"in {seconds:.0f} s")
    return outcome


def one_run_per_folder(data: dict, work: Path, trials: int, rng: random.Random) -> Outcome:
    outcome = Outcome("one-run-per-folder", "of two runs started at once into one folder, one fails naming the "
                                            "other, one finishes whole")
    expected_keys = sorted(keys_in_shards(data["shards"], "train"))
    for trial in range(trials):
        out = work / "concurrent_train" / str(trial)
        args = ["sifar-train", "--shards", str(data["shards"]), "--output", str(out), *TINY_TRAINING]
        codes, messages = two_at_once(args)
        steps = [s for s, _ in step_losses(out)] if (out / "metrics.jsonl").exists() else []
        every_step_once = steps == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
        outcome.record(codes == [0, 1] and "in use" in messages and every_step_once,
                       f"training: exit codes {codes}, {len(steps)} steps logged, each once "
                       f"{len(set(steps)) == len(steps)}")
        out = work / "concurrent_shard" / str(trial)
        codes, messages = two_at_once(shard_args(data["videos"], out, "train"))
        keys = sorted(keys_in_shards(out, "train"))
        outcome.record(codes == [0, 1] and "in use" in messages and keys == expected_keys,
                       f"sharding: exit codes {codes}, {len(keys)} videos of {len(expected_keys)}")
    return outcome


def two_at_once(args: list[str]) -> tuple[list[int], str]:
    """Start ``args`` twice at the same moment; (sorted exit codes, the loser's output)."""
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=COMMAND_TIMEOUT)[0] for run in runs]
    codes = [run.returncode for run in runs]
    return sorted(codes), "".join(out for out, code in zip(outputs, codes) if code != 0)


def _installed(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


# ---- fault servers on 127.0.0.1 ---------------------------------------------------------------------------


@contextmanager
def stalling_server(folder: Path, stall: str) -> Iterator[str]:
    """Serves ``folder``; every download of ``stall`` sends half the file, then nothing, until the server stops."""
    stopped = threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def copyfile(self, source, outputfile):
            if self.path.lstrip("/") != stall:
                return super().copyfile(source, outputfile)
            data = source.read()
            outputfile.write(data[:len(data) // 2])
            outputfile.flush()
            stopped.wait(NETWORK_BOUND)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stopped.set()
        server.shutdown()
        server.server_close()


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """Accepts every connection on 127.0.0.1 and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    held: list[socket.socket] = []

    def accept_forever() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # the listener was closed
                return

    threading.Thread(target=accept_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for connection in held:
            connection.close()


# ---- main -----------------------------------------------------------------------------------------------

SCENARIOS = {"shard-kill": shard_kill, "train-kill": train_kill, "damaged-shards": damaged_shards,
             "stalls": stalls, "one-run-per-folder": one_run_per_folder}


def main() -> int:
    args = parse_args()
    names = args.scenarios.split(",")
    unknown = set(names) - SCENARIOS.keys()
    if unknown:
        sys.exit(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sifar-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    data = make_data(work)
    print(f"data: 40 videos of 24 frames (32 train / 8 val); sharding a split takes {data['shard_seconds']:.1f} s, "
          f"training {EPOCHS * STEPS_PER_EPOCH} steps {data['train_seconds']:.1f} s", flush=True)
    rng = random.Random(args.seed)
    outcomes = []
    for name in names:
        outcome = SCENARIOS[name](data, work, args.trials, rng)
        outcomes.append(outcome)
        print(f"{name}: {outcome.held}/{outcome.trials} held ({time.monotonic() - started:.0f} s so far)", flush=True)
    print("\n| scenario | trials | faults injected | invariant | held |\n|---|---|---|---|---|")
    for o in outcomes:
        faults = f"{o.faults} ({o.mid_work} mid-work)" if o.mid_work is not None else str(o.faults)
        print(f"| {o.scenario} | {o.trials} | {faults} | {o.invariant} | {o.held}/{o.trials} |")
    for o in outcomes:
        print(f"\n{o.scenario}:\n" + "\n".join(f"  - {note}" for note in o.notes))
    print(f"\n{time.monotonic() - started:.0f} s in all (seed {args.seed}, {args.trials} trials each); work: {work}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(o.held == o.trials for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
