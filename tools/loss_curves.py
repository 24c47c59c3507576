"""Do two training settings give the same loss curve? Issue 30's adoption test for fp8: "a loss curve equal to
bf16 within run-to-run noise over >= 2000 steps".

Each group is a few runs of one setting with different seeds (their ``metrics.jsonl``, as ``sifar-train``
writes it). A run's curve is its mean training loss over every ``--points-every`` steps. At each point the
tool compares the groups' means against the noise between runs: the seed-to-seed standard deviation of the
point, pooled over both groups, gives the standard error of the difference of the two means and, with
Student's t for the few runs (three seeds a group leave four degrees of freedom: 2.78 SE, not 2), its 95%
interval; the curves are equal within run-to-run noise when the difference stays inside that interval at
(nearly) every point (at most one in ten outside) and over the last tenth of the steps. Where the groups' runs share
seeds (same data order, same initial weights), the same-seed differences are reported too: a paired view that
sees smaller offsets than the unpaired noise allows.

    python -m tools.loss_curves --group bf16=runs/bf16-s0/metrics.jsonl,runs/bf16-s1/metrics.jsonl \\
        --group fp8=runs/fp8-s0/metrics.jsonl,runs/fp8-s1/metrics.jsonl --steps 3000 --json curves.json
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from sifar.cli.options import comma_items
from sifar.io import write_json
from sifar.metrics_log import read_metrics

WITHIN_NOISE_SHARE = 0.9  # share of points whose difference must lie inside its 95% interval


def loss_curve(metrics: Path, points_every: int, steps: int) -> list[float]:
    """Mean logged loss of each ``points_every`` optimizer steps (by step number, so a log thinned by
    ``--log-interval`` bins the same) of the first ``steps`` steps of one run."""
    if not metrics.is_file():
        raise click.BadParameter(f"{metrics} does not exist (a run's metrics.jsonl, as sifar-train writes it)")
    logged = [r for r in read_metrics(metrics) if r["kind"] == "step" and r["step"] <= steps]
    if not logged or logged[-1]["step"] < steps:
        last = logged[-1]["step"] if logged else 0
        raise click.BadParameter(f"{metrics} logs training steps up to {last}, fewer than --steps {steps}")
    points: list[list[float]] = [[] for _ in range(math.ceil(steps / points_every))]
    for record in logged:
        points[(record["step"] - 1) // points_every].append(record["loss"])
    if not all(points):
        raise click.BadParameter(f"{metrics} logs no step in some {points_every} steps: raise --points-every")
    return [statistics.fmean(losses) for losses in points]


@dataclass
class CurveComparison:
    steps: int
    points_every: int
    mean_difference: list[float]  # per point: mean of the second group minus mean of the first
    interval: list[float]  # per point: half-width of that difference's 95% interval
    share_within_noise: float
    final_difference: float  # over the last tenth of the steps
    final_interval: float
    paired_final: list[float]  # the last tenth's same-seed differences, where the groups' runs pair up
    verdict: str


def t_quantile_975(degrees: int) -> float:
    """Student's t 97.5% quantile (Cornish-Fisher expansion around the normal's; within 0.5% of the tables from
    3 degrees of freedom on, 1% at 2): the half-width in SE of a two-sided 95% interval. Written out because
    SciPy (``scipy.stats.t.ppf``) is not a dependency and torch's StudentT has no inverse CDF."""
    z = 1.959964
    terms = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96, (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
             (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(term / degrees ** (i + 1) for i, term in enumerate(terms))


def pooled_sd(groups: list[list[float]]) -> tuple[float, int]:
    """The standard deviation within groups, pooled, and its degrees of freedom."""
    degrees = sum(len(values) - 1 for values in groups)
    return math.sqrt(sum((len(v) - 1) * statistics.variance(v) for v in groups if len(v) > 1) / degrees), degrees


def difference_and_error(first: list[list[float]], second: list[list[float]],
                         point: slice | int) -> tuple[float, float]:
    """Difference of the two groups' mean losses over ``point`` (one point, or a span of points averaged per run)
    and the half-width of its 95% interval from the seed-to-seed spread of both groups."""
    def per_run(curves: list[list[float]]) -> list[float]:
        return [statistics.fmean(c[point]) if isinstance(point, slice) else c[point] for c in curves]

    a, b = per_run(first), per_run(second)
    sd, degrees = pooled_sd([a, b])
    return statistics.fmean(b) - statistics.fmean(a), t_quantile_975(degrees) * sd * math.sqrt(1 / len(a) + 1 / len(b))


def compare_curves(first: list[list[float]], second: list[list[float]], points_every: int,
                   paired: bool) -> CurveComparison:
    """``first`` and ``second``: each run's curve (the same number of points), two or more runs a group."""
    if min(len(first), len(second)) < 2:
        raise click.BadParameter("each group needs two or more runs: run-to-run noise needs a spread")
    points = len(first[0])
    per_point = [difference_and_error(first, second, i) for i in range(points)]
    within = sum(abs(d) <= e for d, e in per_point) / points
    last = slice(points - max(1, points // 10), points)
    final, final_error = difference_and_error(first, second, last)
    pairs = [statistics.fmean(b[last]) - statistics.fmean(a[last]) for a, b in zip(first, second)] if paired else []
    verdict = ("equal within run-to-run noise" if within >= WITHIN_NOISE_SHARE and abs(final) <= final_error
               else "different beyond run-to-run noise")
    return CurveComparison(points * points_every, points_every, [d for d, _ in per_point], [e for _, e in per_point],
                           within, final, final_error, pairs, verdict)


def group_option(value: str) -> tuple[str, list[Path]]:
    name, _, paths = value.partition("=")
    if not name or not paths:
        raise click.BadParameter(f"{value!r} is not NAME=METRICS[,METRICS...]")
    return name, [Path(p) for p in comma_items(paths)]


def report(names: list[str], comparison: CurveComparison) -> str:
    lines = [f"{names[1]} against {names[0]} over {comparison.steps} steps (points of {comparison.points_every}): "
             f"{comparison.verdict}",
             f"  difference inside its 95% interval at {100 * comparison.share_within_noise:.0f}% of the points "
             f"(wanted >= {100 * WITHIN_NOISE_SHARE:.0f}%)",
             f"  last tenth: {comparison.final_difference:+.4f} (95% interval +-{comparison.final_interval:.4f})"]
    if comparison.paired_final:
        lines.append("  same seed, last tenth: " + ", ".join(f"{d:+.4f}" for d in comparison.paired_final))
    return "\n".join(lines)


@click.command(help=__doc__)
@click.option("--group", "groups", multiple=True, required=True,
              help="NAME=METRICS[,METRICS...]: one setting's runs; exactly two groups, the reference first.")
@click.option("--steps", type=int, required=True, help="Compare the first STEPS training steps of every run.")
@click.option("--points-every", type=int, default=100, show_default=True, help="Steps averaged into one point.")
@click.option("--paired/--unpaired", default=True, show_default=True,
              help="The groups' runs are listed in the same seed order (same data order and initial weights).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the curves and the comparison here.")
def main(groups: tuple[str, ...], steps: int, points_every: int, paired: bool, json_path: Path | None) -> None:
    if len(groups) != 2:
        raise click.BadParameter("give exactly two --group options", param_hint="--group")
    named = [group_option(g) for g in groups]
    curves = {name: [loss_curve(path, points_every, steps) for path in paths] for name, paths in named}
    names = list(curves)
    if paired and len(curves[names[0]]) != len(curves[names[1]]):
        raise click.BadParameter("--paired needs as many runs in each group", param_hint="--group")
    comparison = compare_curves(curves[names[0]], curves[names[1]], points_every, paired)
    click.echo(report(names, comparison))
    if json_path is not None:
        found: dict[str, Any] = {"groups": {name: [str(p) for p in paths] for name, paths in named},
                                 "curves": curves, "comparison": asdict(comparison)}
        write_json(json_path, found)


if __name__ == "__main__":
    main()
