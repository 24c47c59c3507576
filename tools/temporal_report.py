"""The temporal study's report, from its results alone: the study's section of ``<docs>/RESULTS.md`` and
``<docs>/temporal_study.png``, rewritten from ``<out>/results.json`` (which ``tools.temporal_study`` writes after
every row). Running the study and writing its report are separate: a cut-off run can be reported, and a
report rewritten without training anything.

    python -m tools.temporal_report --output runs/temporal --docs docs
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from sifar.io import atomic_write

from tools.temporal_rows import ROWS

SECTION_BEGIN = "<!-- temporal-study:begin (written by tools/temporal_study.py) -->"
SECTION_END = "<!-- temporal-study:end -->"
ORDER_LABELS = {"reverse": "reversed frames", "shuffle": "shuffled frames"}


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def order_metric(row: dict[str, Any] | None, order: str, key: str) -> float | None:
    return (row or {}).get("orders", {}).get(order, {}).get(key)


def main_table(results: dict[str, Any]) -> str:
    rows = []
    for spec in ROWS:
        row = results["rows"].get(spec.name)
        if row is None or "error" in row:
            reason = "failed: " + row["error"].splitlines()[-1] if row else "not run"
            rows.append([spec.title, reason] + [""] * 10)
            continue
        normal = row["orders"]["normal"]
        rows.append([spec.title, row["model"], row["layout"], percent(normal["top1"]), percent(normal["top5"]),
                     percent(normal["motion_top1"]), percent(normal["direction_in_pair"]), f"{row['train_s']:.0f}",
                     f"{row['epoch_clips_per_s']:.0f}", f"{100 * row['data_wait']:.0f}%",
                     f"{normal['clips_per_s']:.0f}", f"{row['params_m']:.1f}"])
    return table(["Row", "Model", "Layout", "Top-1", "Top-5", "Motion top-1", "Direction in pair", "Train s",
                  "Train clips/s", "Loader wait", "Eval clips/s", "Params M"], rows)


def order_table(results: dict[str, Any]) -> str:
    rows = []
    for name in ("sifar_3x3", "frame_average"):
        row = results["rows"].get(name)
        if row and "orders" in row:
            cells = [f"{percent(order_metric(row, o, 'top1'))} ({percent(order_metric(row, o, 'direction_in_pair'))})"
                     for o in ("normal", "reverse", "shuffle")]
            rows.append([row["title"], *cells])
    return table(["Model", "normal", "reverse", "shuffle"], rows)


def findings(results: dict[str, Any], val_videos: int) -> list[str]:
    """One line per goal of the issue, with the measured figures (a missed goal says so)."""
    rows = results["rows"]

    def top1(name: str, order: str = "normal") -> float | None:
        return order_metric(rows.get(name), order, "top1")

    lines = []
    if (sifar := top1("sifar_3x3")) is not None:
        stderr = 100 * math.sqrt(sifar / 100 * (1 - sifar / 100) / max(val_videos, 1))
        verdict = "met" if sifar >= 95 else "**missed**"
        lines.append(f"SIFAR 3x3: top-1 {sifar:.1f}% (+-{stderr:.1f} binomial standard error on {val_videos} clips); "
                     f"goal >= 95%: {verdict}.")
    for name in ("sifar_3x3", "resnet"):
        per_motion = order_metric(rows.get(name), "normal", "per_motion")
        if per_motion:
            cells = ", ".join(f"{motion} {m['motion_top1']:.0f}/{percent(m['direction_in_pair'])}"
                              for motion, m in per_motion.items())
            lines.append(f"Per motion, {rows[name]['title']} (motion named / direction in pair, %): {cells}.")
    if (average := top1("frame_average")) is not None:
        motion = order_metric(rows["frame_average"], "normal", "motion_top1")
        direction = order_metric(rows["frame_average"], "normal", "direction_in_pair")
        lines.append(f"Frame average: top-1 {average:.1f}%, motion named {motion:.1f}%, direction within the pair "
                     f"{percent(direction)}%; chance within a direction pair is 50%, so an order-blind model that "
                     f"names every motion scores 50% top-1 at best (chance over all 10 classes: 10%).")
    if (reverse := top1("sifar_3x3", "reverse")) is not None:
        shuffled = top1("sifar_3x3", "shuffle")
        motion = order_metric(rows["sifar_3x3"], "reverse", "motion_top1")
        lines.append(f"Frame order (Table 9): SIFAR 3x3 top-1 {top1('sifar_3x3'):.1f}% in order, {reverse:.1f}% "
                     f"reversed, {percent(shuffled)}% shuffled. Reversing a clip turns it into its twin class, "
                     f"so a model that reads order names the motion ({percent(motion)}% reversed) but the opposite "
                     f"direction.")
    layouts = {name: top1(f"sifar_{name}") for name in ("1x8", "2x4", "3x3")}
    if all(v is not None for v in layouts.values()):
        best = max((k for k in layouts if k != "3x3"), key=layouts.get)
        lines.append("Layouts (Table 8a): " + ", ".join(f"{k} {v:.1f}%" for k, v in layouts.items())
                     + f"; the square grid beats the best other layout ({best}): "
                     + better_verdict(layouts["3x3"], layouts[best], val_videos) + ".")
    plain, large = top1("resnet"), top1("resnet_large_kernel")
    if plain is not None and large is not None:
        lines.append(f"CNN (Table 7): ResNet-18 {plain:.1f}%, with a 7x7 block {large:.1f}% "
                     f"({large - plain:+.1f} points); the large kernel helps: "
                     + better_verdict(large, plain, val_videos) + ".")
    return lines


def better_verdict(a: float, b: float, clips: int) -> str:
    """Is accuracy ``a`` above ``b`` (percent, each on ``clips`` held-out clips) by more than two standard
    errors of the difference of two independent proportions?"""
    error = 100 * math.sqrt(sum(p / 100 * (1 - p / 100) for p in (a, b)) / max(clips, 1))
    if abs(a - b) <= 2 * error:
        return f"not resolved ({a - b:+.1f} points is within two standard errors, {2 * error:.1f})"
    return "yes" if a > b else f"**no** ({a - b:+.1f} points)"


def setup_lines(results: dict[str, Any]) -> list[str]:
    """The run's machine, data and recipe, one bullet each."""
    settings, data = results["settings"], results.get("data", {})
    devices = ", ".join(sorted({row["device"] for row in results["rows"].values() if "device" in row})) or "-"
    size = f"{settings['frame_size']}x{settings['frame_size']}"
    machine = f"Machine: {devices}, {results.get('cpu_cores', '?')} CPU cores, torch {results.get('torch', '?')}."
    dataset = (
        f"Data: the embedded synthetic dataset (`sifar-tools synth`, seed {settings['seed']}): "
        f"{settings['videos']} videos of {settings['frames_per_video']} frames at {size} px, "
        f"{data.get('train_videos', '?')} train / {data.get('val_videos', '?')} held-out; made in "
        f"{data.get('synth_s', '?')} s, sharded in {data.get('shard_s', '?')} s. Its 10 classes form 5 direction "
        "pairs (move right/left, down/up, grow/shrink, rotate cw/ccw, appear/disappear); a twin is drawn exactly "
        "like its partner and played backwards, so only the order of the frames separates a pair."
    )
    recipe = (
        f"Training, every row from scratch with seed {settings['seed']}: 8 frames of {size} per clip, "
        f"{settings['epochs']} epochs x {settings['steps_per_epoch']} steps x {settings['batch_size']} clips, "
        f"AdamW lr {settings['swin_lr']} for Swin (the paper's; 1e-3 left it at chance), {settings['cnn_lr']} "
        f"for ResNet, cosine to {settings['min_lr']} after {settings['warmup_epochs']} warm-up epoch, weight "
        f"decay {settings['weight_decay']}, drop path {settings['drop_path']}, gradient norm "
        f"clipped at {settings['clip_grad']}, label smoothing 0.1, no mixup/cutmix, multi-scale crops, **no "
        "horizontal flip** (a flip turns move_right into move_left and rotate_cw into rotate_ccw); bf16 autocast "
        "on GPU."
    )
    evaluation = ("Evaluation: the last checkpoint, one centre clip and crop per held-out video, as `sifar-eval` "
                  "does (`--reverse-frames` / `--shuffle-frames` for the other orders).")
    columns = ("*Motion top-1*: the prediction is the true class or its twin. *Direction in pair*: of those, the "
               "share with the right direction (chance: 50%). *Train s*: wall time of `sifar.train.train` (model "
               "build, loader start-ups and checkpoints included). *Train clips/s* and *loader wait*: the "
               "trainer's own figures, median over epochs. *Eval clips/s*: after each pass's first batch "
               "(runs before 2026-12-05 included the loader's start).")
    return [machine, dataset, recipe, evaluation, columns]


def markdown(results: dict[str, Any]) -> str:
    val_videos = results.get("data", {}).get("val_videos", 0)
    warning = ("\n**`--quick` smoke test: tiny data and one short epoch; these numbers say nothing about the "
               "method.**\n") if results.get("quick") else ""
    return f"""{SECTION_BEGIN}
## Super images learn time: the temporal study (issue 8)
{warning}
Made by `tools/temporal_study.py`, from its `results.json`:

```bash
{chr(10).join(results["commands"])}
```

{chr(10).join(f"- {line}" for line in setup_lines(results))}

{main_table(results)}

Frame order (paper Table 9), top-1 (direction in pair):

{order_table(results)}

Findings:

{chr(10).join(f"- {line}" for line in findings(results, val_videos))}

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
    """Horizontal bars: top-1 and motion top-1 per row (and per frame order), chance lines at 10% and 50%."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = []
    for spec in ROWS:
        row = results["rows"].get(spec.name)
        for order in spec.orders if row and "orders" in row else ():
            label = spec.title if order == "normal" else f"{spec.title}, {ORDER_LABELS[order]}"
            bars.append((label, row["orders"][order]))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(bars) + 2.0))
    y = range(len(bars))
    ax.barh([i + 0.2 for i in y], [b[1]["motion_top1"] for b in bars], height=0.4, color="#c6dbef",
            label="motion top-1 (pair named)")
    ax.barh([i - 0.2 for i in y], [b[1]["top1"] for b in bars], height=0.4, color="#2171b5", label="top-1")
    for i, (_, metrics) in enumerate(bars):
        ax.text(metrics["top1"] + 1, i - 0.2, f"{metrics['top1']:.1f}", va="center", fontsize=8)
    ax.axvline(10, ls=":", color="grey", label="chance (10 classes)")
    ax.axvline(50, ls="--", color="grey", label="order-blind ceiling (50%)")
    ax.set_yticks(list(y), [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 105), xlabel="held-out accuracy (%)", title="Synthetic temporal dataset: what reads time")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4)  # below: bars reach 100%
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    plot(results, docs / "temporal_study.png")
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
