"""The temporal study's report, from its results alone: the study's section of ``<docs>/RESULTS.md`` and
``<docs>/temporal_study.png``, rewritten from ``<out>/results.json`` (which ``tools.temporal_study`` writes after
every row). Running the study and writing its report are separate: a cut-off run can be reported, and a
report rewritten without training anything.

    python -m tools.temporal_report --output runs/temporal --docs docs
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import click

from sifar.io import atomic_write, write_json

from tools.loss_curves import pooled_sd
from tools.temporal_rows import ROW_NAMES, ROWS, RowSpec

SECTION_BEGIN = "<!-- temporal-study:begin (written by tools/temporal_study.py) -->"
SECTION_END = "<!-- temporal-study:end -->"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def order_metric(run: dict[str, Any] | None, order: str, key: str) -> float | None:
    return (run or {}).get("orders", {}).get(order, {}).get(key)


@dataclass
class RowRuns:
    """A row's finished runs (one per seed) and its failed ones."""

    spec: RowSpec
    runs: list[dict[str, Any]]
    failed: list[dict[str, Any]]

    def values(self, key: str, order: str = "normal") -> list[float]:
        return [v for run in self.runs if (v := order_metric(run, order, key)) is not None]

    def mean(self, key: str, order: str = "normal") -> float | None:
        values = self.values(key, order)
        return statistics.fmean(values) if values else None

    def std(self, key: str = "top1") -> float | None:
        values = self.values(key)
        return statistics.stdev(values) if len(values) > 1 else None

    def standard_error(self, seed_sd: float | None) -> float:
        """Of the mean top-1 over this row's seeds: ``seed_sd`` (one run's seed-to-seed standard deviation,
        pooled over rows: :func:`model_seed_sd`) or, where no row has two seeds, none; never below the binomial
        error of the held-out set."""
        top1 = self.mean("top1")
        held_out = min(run["held_out"] for run in self.runs)
        binomial = 100 * math.sqrt(top1 / 100 * (1 - top1 / 100) / held_out)
        return max(seed_sd or 0.0, binomial, 1e-9) / math.sqrt(len(self.runs))

    def first(self) -> dict[str, Any] | None:
        """The run of the lowest seed (the one the frame-order table and per-motion lines show)."""
        return min(self.runs, key=lambda run: run["seed"]) if self.runs else None


def pooled_seed_sd(rows: Iterable[RowRuns]) -> float | None:
    """The top-1 standard deviation between seeds, pooled over the rows run with two or more (None: none was):
    three seeds estimate a row's own spread poorly, and rows run with one seed have none."""
    groups = [row.values("top1") for row in rows if len(row.runs) > 1]
    return pooled_sd(groups)[0] if groups else None


def model_seed_sd(rows: dict[str, RowRuns], model: str) -> float | None:
    """One run's seed-to-seed spread for ``model``: pooled over its own rows, else over every row. Models differ
    in spread (a ResNet at the ceiling varies by hundredths of a point, the Swin by half a point), so pooling them
    together would make the Swin's differences look surer than they are."""
    own = pooled_seed_sd(row for row in rows.values() if row.runs and row.first()["model"] == model)
    return own if own is not None else pooled_seed_sd(rows.values())


def rows_of(results: dict[str, Any]) -> dict[str, RowRuns]:
    grouped = {spec.name: RowRuns(spec, [], []) for spec in ROWS}
    for run in results["runs"].values():
        if run.get("row") in grouped:
            group = grouped[run["row"]]
            (group.failed if "error" in run else group.runs).append(run)
    return grouped


def mean_std(row: RowRuns, key: str = "top1") -> str:
    mean, std = row.mean(key), row.std(key)
    return "-" if mean is None else f"{mean:.1f}" + (f" ± {std:.1f}" if std is not None else "")


def main_table(rows: dict[str, RowRuns]) -> str:
    lines = []
    for row in rows.values():
        if not row.runs:
            reason = ("failed: " + row.failed[0]["error"].splitlines()[-1]) if row.failed else "not run"
            lines.append([row.spec.title, reason] + [""] * 10)
            continue
        run = row.first()
        seeds = ", ".join(f"{v:.1f}" for v in row.values("top1"))
        lines.append([row.spec.title, run["model"], run["layout"], str(len(row.runs)), mean_std(row), seeds,
                      mean_std(row, "top5"), percent(row.mean("motion_top1")), percent(row.mean("direction_in_pair")),
                      str(run["held_out"]), f"{statistics.fmean(r['train_s'] for r in row.runs):.0f}",
                      f"{statistics.fmean(r['epoch_clips_per_s'] for r in row.runs):.0f}"])
    return table(["Row", "Model", "Layout", "Seeds", "Top-1 (mean ± sd)", "Top-1 per seed", "Top-5", "Motion top-1",
                  "Direction in pair", "Held out", "Train s", "Train clips/s"], lines)


def order_table(rows: dict[str, RowRuns]) -> str:
    lines = []
    for name in ("sifar_3x3", "frame_average"):
        run = rows[name].first()
        if run is not None:
            cells = [f"{percent(order_metric(run, o, 'top1'))} ({percent(order_metric(run, o, 'motion_top1'))} / "
                     f"{percent(order_metric(run, o, 'direction_in_pair'))})" for o in ("normal", "reverse", "shuffle")]
            lines.append([f"{run['title']} (seed {run['seed']})", *cells])
    return table(["Model", "normal", "reverse", "shuffle"], lines)


COMPARISONS = (  # (claim, the row the paper favours, the row it beats)
    ("Table 8a: the square grid beats 2x4", "sifar_3x3", "sifar_2x4"),
    ("Table 8a: the square grid beats 1x8", "sifar_3x3", "sifar_1x8"),
    ("Table 8b: the per-frame embedding helps", "sifar_3x3_frame_embed", "sifar_3x3"),
    ("Table 7: a 7x7 large-kernel block helps the CNN", "resnet_large_kernel", "resnet"),
    ("16 frames of 32 px: the square grid (4x4) beats a strip (2x8)", "sifar16_4x4", "sifar16_2x8"),
    ("Issue 30: fp8 linear layers train as bf16 does (wanted: no 1-point difference)", "sifar_3x3_fp8", "sifar_3x3"),
    ("Issue 30: the tanh GELU in the GEMM epilogues trains as the exact GELU does (wanted: no 1-point difference)",
     "sifar_3x3_gelu_epilogue", "sifar_3x3"),
)


def comparison(rows: dict[str, RowRuns], favoured: str, other: str) -> dict[str, Any] | None:
    """Mean top-1 difference of two rows, its standard error and whether it is outside two of them."""
    a, b = rows[favoured], rows[other]
    if not a.runs or not b.runs:
        return None
    difference = a.mean("top1") - b.mean("top1")
    error = math.hypot(*(row.standard_error(model_seed_sd(rows, row.first()["model"])) for row in (a, b)))
    return {"verdict": verdict(difference, error), "difference": round(difference, 2),
            "standard_error": round(error, 2), "seeds": (len(a.runs), len(b.runs)),
            "one_point_resolvable": 2 * error < 1.0}


def verdict(difference: float, error: float) -> str:
    """Whether the favoured row is better beyond two standard errors, worse beyond them, or neither; in the last
    case, whether the two-SE interval still rules out a 1-point difference either way."""
    if difference > 2 * error:
        return "holds"
    if difference < -2 * error:
        return "**does not hold**"
    return "no 1-point difference" if abs(difference) + 2 * error < 1.0 else "not resolved"


def comparison_table(rows: dict[str, RowRuns]) -> str:
    lines = []
    for claim, favoured, other in COMPARISONS:
        found = comparison(rows, favoured, other)
        if found is None:
            lines.append([claim, "not run", "", "", "", ""])
            continue
        lines.append([claim, f"{mean_std(rows[favoured])} vs {mean_std(rows[other])}", f"{found['difference']:+.2f}",
                      f"{2 * found['standard_error']:.2f}", "yes" if found["one_point_resolvable"] else "no",
                      found["verdict"]])
    return table(["Paper's claim", "Top-1 (mean ± sd over seeds)", "Difference", "2 SE", "1 point resolvable",
                  "Here"], lines)


def findings(rows: dict[str, RowRuns]) -> list[str]:
    """One line per goal of the issue, with the measured figures (a missed goal says so)."""
    lines = []
    sifar = rows["sifar_3x3"]
    if sifar.runs:
        held_out, worst = sifar.first()["held_out"], min(sifar.values("top1"))
        verdict = "met" if worst >= 97 and held_out >= 5000 else "**missed**"
        lines.append(f"SIFAR 3x3: top-1 {mean_std(sifar)}% over {len(sifar.runs)} seed(s) (lowest {worst:.1f}%) on "
                     f"{held_out} held-out clips; goal >= 97% on >= 5000: {verdict}.")
        first = sifar.first()
        reverse, shuffled = order_metric(first, "reverse", "top1"), order_metric(first, "shuffle", "top1")
        if reverse is not None:
            motion = order_metric(first, "reverse", "motion_top1")
            verdict = "met" if reverse <= 15 and motion is not None and motion >= 90 else "**missed**"
            in_order = order_metric(first, "normal", "top1")
            lines.append(f"Frame order (Table 9), seed {first['seed']}: {in_order:.1f}% in "
                         f"order, {reverse:.1f}% reversed with the motion still named in {percent(motion)}% (a "
                         f"reversed clip is its twin class), {percent(shuffled)}% shuffled; goal reversed <= 15% "
                         f"with the motion named: {verdict}.")
        per_motion = order_metric(first, "normal", "per_motion") or {}
        cells = ", ".join(f"{m} {v['motion_top1']:.0f}/{percent(v['direction_in_pair'])}"
                          for m, v in per_motion.items())
        lines.append(f"Per motion, SIFAR 3x3 seed {first['seed']} (motion named / direction in pair, %): {cells}.")
    lines += pointing_lines(rows)
    average = rows["frame_average"].first()
    if average is not None:
        direction = order_metric(average, "normal", "direction_in_pair")
        verdict = "met" if direction is not None and direction <= 60 else "**missed**"
        lines.append(f"Frame average (same Swin, order-blind): top-1 {order_metric(average, 'normal', 'top1'):.1f}%, "
                     f"motion named {percent(order_metric(average, 'normal', 'motion_top1'))}%, direction in pair "
                     f"{percent(direction)}% (chance 50%); goal <= 60%: {verdict}.")
    return lines


def pointing_lines(rows: dict[str, RowRuns]) -> list[str]:
    """The pointing game of the rows that played it, per backbone stage (goal: >= 80% for the Swin with
    Ablation-CAM)."""
    lines = []
    for name in ("sifar_3x3", "resnet"):
        run = rows[name].first()
        if run is None or "pointing" not in run:
            continue
        game = run["pointing"]
        stages = game["stages"]
        first = next(iter(stages.values()))["ablation"]
        cells = "; ".join(f"stage {stage} ({found['positions_per_frame']} positions a frame) "
                          + ", ".join(f"{method} {found[method]['pointing_accuracy']:.1f}%"
                                      for method in ("ablation", "gradcam"))
                          for stage, found in stages.items())
        goal = ""
        if name == "sifar_3x3":
            best_stage = max(stages, key=lambda stage: stages[stage]["ablation"]["pointing_accuracy"])
            best = stages[best_stage]["ablation"]["pointing_accuracy"]
            goal = (f"; goal >= 80% with Ablation-CAM: met at stage {best_stage} ({best:.1f}%)" if best >= 80 else
                    f"; goal >= 80% with Ablation-CAM: **missed** at every stage (best {best:.1f}%, stage "
                    f"{best_stage})")
        lines.append(f"Pointing game, {run['title']} seed {run['seed']} ({game['clips']} held-out clips, "
                     f"{first['frames_counted']} frames with the object visible, a random point "
                     f"{first['random_baseline']:.1f}%, maps on {game['device']}): {cells}{goal} (maps and strips: "
                     f"the run's `cam/`; docs/CAM.md).")
    return lines


def results_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """docs/results.json's rows: one per finished run, flat."""
    rows = []
    for run in results["runs"].values():
        if "error" in run:
            continue
        normal = run["orders"]["normal"]
        rows.append({"row": run["row"], "title": run["title"], "model": run["model"], "layout": run["layout"],
                     "frames": run["num_frames"], "frame_size": run["frame_size"], "seed": run["seed"],
                     "frame_embed": run["frame_embed"], "frame_average": run["frame_average"],
                     "top1": normal["top1"], "top5": normal["top5"], "motion_top1": normal["motion_top1"],
                     "direction_in_pair": normal["direction_in_pair"], "held_out": run["held_out"],
                     "orders": {o: v["top1"] for o, v in run["orders"].items()},
                     "pointing": run.get("pointing")})
    return sorted(rows, key=lambda r: (ROW_NAMES.index(r["row"]), r["seed"]))


def setup_lines(results: dict[str, Any]) -> list[str]:
    """The run's machine, data and recipe, one bullet each."""
    settings, data = results["settings"], results.get("data", {})
    runs = results["runs"].values()
    devices = ", ".join(sorted({run["device"] for run in runs if "device" in run})) or "-"
    size = f"{settings['frame_size']}x{settings['frame_size']}"
    machine = f"Machine: {devices}, {results.get('cpu_cores', '?')} CPU cores, torch {results.get('torch', '?')}."
    dataset = (
        f"Data: the synthetic dataset (`sifar-tools synth`, seed {settings['seed']}): "
        f"{settings['videos']} videos of {settings['frames_per_video']} frames at {size} px, "
        f"{data.get('train_videos', '?')} train / {data.get('val_videos', '?')} held-out; made in "
        f"{data.get('synth_s', '?')} s, sharded in {data.get('shard_s', '?')} s. Its 10 classes form 5 direction "
        "pairs (move right/left, down/up, grow/shrink, rotate cw/ccw, appear/disappear); a twin is drawn exactly "
        "like its partner and played backwards, so only the order of the frames separates a pair."
    )
    recipe = (
        f"Training, every run from scratch, one training seed each: 8 frames of {size} per clip unless the row "
        f"says, {settings['epochs']} epochs x {settings['steps_per_epoch']} steps x {settings['batch_size']} "
        f"clips, AdamW lr {settings['swin_lr']} for Swin (the paper's; 1e-3 left it at chance), "
        f"{settings['cnn_lr']} for ResNet, cosine to {settings['min_lr']} after {settings['warmup_epochs']} "
        f"warm-up epoch, weight decay {settings['weight_decay']}, drop path {settings['drop_path']}, gradient "
        f"norm clipped at {settings['clip_grad']}, label smoothing 0.1, no mixup/cutmix, multi-scale crops, **no "
        "horizontal flip** (a flip turns move_right into move_left and rotate_cw into rotate_ccw); bf16 autocast "
        "on GPU" + ("; the training split held decoded on the GPU (`--resident`, the streaming loader's sampling "
                    "and crops drawn there), several runs at once." if settings.get("resident") else ".")
    )
    evaluation = ("Evaluation: the last checkpoint, one centre clip and crop per held-out video, streamed from the "
                  "shards as `sifar-eval` does (`--reverse-frames` / `--shuffle-frames` for the other orders).")
    columns = ("*Motion top-1*: the prediction is the true class or its twin. *Direction in pair*: of those, the "
               "share with the right direction (chance: 50%). *Train s*: wall time of `sifar.train.train`, with "
               "whatever other runs shared the GPU (the commands above). *2 SE*: two standard errors of the "
               "difference of two rows' mean top-1; a row's error is the larger of the seed-to-seed standard "
               "deviation (pooled over the rows of the same model run with several seeds) and the binomial error "
               "of the held-out set, over the square root of its seeds. *No 1-point difference*: neither row is "
               "better beyond 2 SE, and the difference with its 2 SE stays within one point either way.")
    return [machine, dataset, recipe, evaluation, columns]


def markdown(results: dict[str, Any]) -> str:
    rows = rows_of(results)
    warning = ("\n**`--quick` smoke test: tiny data and one short epoch; these numbers say nothing about the "
               "method.**\n") if results.get("quick") else ""
    return f"""{SECTION_BEGIN}
## Super images learn time: the temporal study (issues 8, 28)
{warning}
Made by `tools/temporal_study.py`, from its `results.json` (every run, machine-readable: `results.json` here):

```bash
{chr(10).join(results["commands"])}
```

{chr(10).join(f"- {line}" for line in setup_lines(results))}

{main_table(rows)}

Frame order (paper Table 9), top-1 (motion named / direction in pair):

{order_table(rows)}

The paper's ablations, separated by seeds:

{comparison_table(rows)}

Findings:

{chr(10).join(f"- {line}" for line in findings(rows))}

![temporal study](temporal_study.png)
{SECTION_END}
"""


def write_section(path: Path, section: str) -> None:
    """Replace this study's section of ``path`` (or append it), leaving the rest of the file as it was."""
    text = path.read_text() if path.is_file() else "# Results\n\n"
    if SECTION_BEGIN in text and SECTION_END in text:
        head, rest = text.split(SECTION_BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(SECTION_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with atomic_write(path, "w") as handle:
        handle.write(text)


def plot(results: dict[str, Any], path: Path) -> None:
    """Top-1 per row: each seed a dot, the mean a bar; chance lines at 10% and 50%."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows_of(results).values() if row.runs]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 2.0))
    for i, row in enumerate(rows):
        values = row.values("top1")
        ax.barh(i, statistics.fmean(values), height=0.6, color="#c6dbef")
        ax.plot(values, [i] * len(values), "o", color="#2171b5", ms=4)
        ax.text(101, i, f"{statistics.fmean(values):.1f}", va="center", fontsize=8)
    ax.axvline(10, ls=":", color="grey", label="chance (10 classes)")
    ax.axvline(50, ls="--", color="grey", label="order-blind ceiling (50%)")
    ax.set_yticks(range(len(rows)), [row.spec.title for row in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 108), xlabel="held-out top-1 (%): bar the mean, dots the seeds",
           title="Synthetic temporal dataset: what reads time")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    plot(results, docs / "temporal_study.png")
    write_json(docs / "results.json", {"settings": results["settings"], "data": results.get("data"),
                                       "commands": results["commands"], "rows": results_rows(results)}, indent=1)
    write_section(docs / "RESULTS.md", markdown(results))


# --- the command -----------------------------------------------------------------------------------------


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The study's folder (its results.json).")
@click.option("--docs", default="docs", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of RESULTS.md and temporal_study.png.")
def main(out: Path, docs: Path) -> None:
    """Rewrite the study's docs from <out>/results.json."""
    results_path = out / "results.json"
    if not results_path.is_file():
        raise click.ClickException(f"no {results_path}: run the study into --output first")
    write_report(json.loads(results_path.read_text()), docs)
    click.echo(f"wrote {docs / 'RESULTS.md'} and {docs / 'temporal_study.png'} from {results_path}")


if __name__ == "__main__":
    main()
