"""Compare ExIt strategies on the simulated learner of ``simulation.py`` and plot
what the paper plots: learnability and depth of sampled instances (Fig. 6),
distinct instances trained on (Fig. 7), held-out K-step accuracy.

Every strategy spends the same budget of rollouts on the same task pools for
each seed. Writes PNGs and ``summary.json`` to ``--out`` and prints Markdown
tables for the write-up.

    .venv/bin/python scripts/simulate_curriculum.py --seeds 8 --rollouts 32000
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from self_improve.simulation import STRATEGIES, SimulationResult, SimulationSettings, simulate, summarize  # noqa: E402
from self_improve.viewer.plots import moving_average  # noqa: E402

LABELS: dict[str, str] = {
    "grpo": "GRPO (no buffer)",
    "uniform": "uniform replay (curriculum buffer, kappa=0)",
    "curriculum": "learnability curriculum",
    "improve": "ExIt improve",
    "diverge": "ExIt diverge",
}
"""Legend text of each simulated strategy."""

SMOOTHING_BATCHES: int = 10
"""Width of the moving average applied to per-batch traces in the plots."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds per strategy (default 8)")
    parser.add_argument("--rollouts", type=int, default=SimulationSettings.rollouts,
                        help=f"rollout budget per run (default {SimulationSettings.rollouts})")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES),
                        help="strategies to compare (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/simulation"),
                        help="folder for plots and summary.json (default results/simulation)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds: must be >= 1, got {args.seeds}")
    return args


def seed_band(runs: list[SimulationResult], trace: str, smoothed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, mean and standard deviation over seeds of one per-batch trace (NaN
    before the buffer is first sampled, which numpy would warn about)."""
    rows = np.vstack([moving_average(getattr(r, trace), SMOOTHING_BATCHES) if smoothed
                      else getattr(r, trace).astype(float) for r in runs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return runs[0].rollouts, np.nanmean(rows, axis=0), np.nanstd(rows, axis=0)


def plot_traces(by_strategy: dict[str, list[SimulationResult]], panels: list[tuple[str, str, bool]],
                title: str, path: Path) -> None:
    """One panel per (trace, y label, smoothed), a line per strategy with a +-1 sd band over seeds;
    a strategy without values for a trace is left out of that panel."""
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for axis, (trace, ylabel, smoothed) in zip(axes[0], panels, strict=True):
        for index, (strategy, runs) in enumerate(by_strategy.items()):
            x, mean, sd = seed_band(runs, trace, smoothed)
            if np.isnan(mean).all():  # GRPO never samples the buffer
                continue
            axis.plot(x, mean, color=f"C{index}", label=LABELS[strategy])
            axis.fill_between(x, mean - sd, mean + sd, color=f"C{index}", alpha=0.2)
        axis.set_xlabel("rollouts")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_heldout(by_strategy: dict[str, list[SimulationResult]], path: Path) -> None:
    """Left: final held-out accuracy after 0..K improve steps. Right: accuracy at
    step 0 (dashed) and step K (solid) over training."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for index, (strategy, runs) in enumerate(by_strategy.items()):
        colour = f"C{index}"
        curves = np.vstack([r.heldout_accuracy[-1] for r in runs])
        steps = np.arange(curves.shape[1])
        left.errorbar(steps, curves.mean(axis=0), yerr=curves.std(axis=0), marker="o", capsize=3,
                      color=colour, label=LABELS[strategy])
        over_time = np.stack([r.heldout_accuracy for r in runs])
        x = runs[0].heldout_rollouts
        right.plot(x, over_time[:, :, -1].mean(axis=0), color=colour, label=f"{LABELS[strategy]}, step K")
        right.plot(x, over_time[:, :, 0].mean(axis=0), color=colour, linestyle="--")
    left.set_xlabel("improve steps k at test time")
    left.set_ylabel("held-out accuracy (end of training)")
    right.set_xlabel("rollouts")
    right.set_ylabel("held-out accuracy (dashed: k=0, solid: k=K)")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    figure.suptitle("Simulated learner: held-out K-step self-improvement (transfer is a model assumption)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def markdown_table(table: dict[str, dict[str, float]], k_steps: int) -> str:
    """The summary as a Markdown table."""
    header = ("| strategy | mean S of buffer-sampled groups | mean S of all groups | mean depth sampled "
              "(last quarter) | max depth | distinct prompts trained on | held-out k=0 | "
              f"held-out k={k_steps} | Delta_K |")
    lines = [header, "|" + "---|" * 9]
    for strategy, row in table.items():
        cells = [LABELS[strategy], f"{row['sampled_learnability']:.4f}", f"{row['batch_learnability']:.4f}",
                 f"{row['sampled_depth']:.2f}", f"{row['max_depth']:.1f}", f"{row['distinct_trained']:.0f}",
                 f"{row['heldout_step0']:.3f}", f"{row['heldout_stepK']:.3f}", f"{row['heldout_delta']:+.3f}"]
        lines.append("| " + " | ".join(cell.replace("nan", "n/a") for cell in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    settings = SimulationSettings(rollouts=args.rollouts)
    started = time.perf_counter()
    by_strategy = {strategy: [simulate(strategy, seed, settings) for seed in range(args.seeds)]
                   for strategy in args.strategies}
    elapsed = time.perf_counter() - started
    table = summarize([run for runs in by_strategy.values() for run in runs])
    args.out.mkdir(parents=True, exist_ok=True)
    plot_traces(by_strategy, [("sampled_learnability", "mean learnability S of buffer-sampled groups", True),
                              ("sampled_depth", "mean depth of buffer-sampled groups", True)],
                "Simulated learner: what the buffer samples (cf. paper Fig. 6)",
                args.out / "fig6_learnability_depth.png")
    plot_traces(by_strategy, [("distinct_trained", "distinct prompts trained on (S > 0)", False)],
                "Simulated learner: distinct instances trained on (cf. paper Fig. 7)", args.out / "fig7_distinct.png")
    plot_heldout(by_strategy, args.out / "heldout_kstep.png")
    command = " ".join(shlex.quote(part) for part in [".venv/bin/python", "scripts/simulate_curriculum.py", *argv])
    json_table = {strategy: {key: None if np.isnan(value) else value for key, value in row.items()}
                  for strategy, row in table.items()}  # NaN (no buffer samples) is not JSON
    summary = {"command": command, "seeds": args.seeds, "settings": vars(settings), "elapsed_s": round(elapsed, 1),
               "table": json_table}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(args.strategies)} strategies x {args.seeds} seeds x {settings.rollouts} rollouts "
          f"in {elapsed:.1f} s\n")
    print(markdown_table(table, settings.k_steps))


if __name__ == "__main__":
    main()
