"""The curriculum's pictures as PNGs: the paper's Figs. 6 and 7 from a run, the score histogram of a buffer.

matplotlib is imported when a figure is drawn (``pip install 'self-improve[viewer]'``). The x axis of
the run figures is the group's position in the order groups finished; the curves are trailing moving
averages over ``window`` groups (the raw values are drawn faintly behind them).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from self_improve.viewer.config import ViewerError
from self_improve.viewer.runlog import GroupRecord
from self_improve.viewer.snapshot import BufferSnapshot

FIG6_FILE = "fig6_depth_learnability.png"
FIG7_FILE = "fig7_distinct_tasks.png"
SCORES_FILE = "buffer_scores.png"
DEPTHS_FILE = "buffer_depths.png"


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise ViewerError("plot: drawing needs matplotlib: pip install 'self-improve[viewer]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values that are not NaN (NaN while there are none)."""
    array = np.asarray(values, dtype=np.float64)
    out = np.full(len(array), np.nan)
    for end in range(len(array)):
        part = array[max(0, end - window + 1): end + 1]
        part = part[~np.isnan(part)]
        if len(part):
            out[end] = part.mean()
    return out


def default_window(count: int) -> int:
    """About a twentieth of the run, at least 1."""
    return max(1, count // 20)


def plot_run(groups: Sequence[GroupRecord], folder: Path, title: str, window: int | None = None) -> list[Path]:
    """Fig. 6 (learnability and depth of groups drawn from the buffer) and Fig. 7 (distinct tasks in
    the buffer) over the run; returns the files written. The buffer's own curves (its mean depth, and
    all of Fig. 7) need its metrics on the rows (``row_metrics="all"``), and are left out without them."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    window = window or default_window(len(groups))
    x = np.arange(1, len(groups) + 1)
    drawn = [group.from_buffer for group in groups]
    learn_drawn = [g.learnability if d else np.nan for g, d in zip(groups, drawn, strict=True)]
    depth_drawn = [float(g.depth) if d else np.nan for g, d in zip(groups, drawn, strict=True)]

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    left.plot(x, learn_drawn, ".", color="C0", alpha=0.25)
    left.plot(x, moving_average(learn_drawn, window), color="C0", label="groups drawn from the buffer")
    left.plot(x, moving_average([g.learnability for g in groups], window), color="C1", linestyle="--",
              label="all groups")
    left.set_ylabel("learnability S of the group (Var of returns / r_max)")
    right.plot(x, depth_drawn, ".", color="C2", alpha=0.25)
    right.plot(x, moving_average(depth_drawn, window), color="C2", label="depth of groups drawn from the buffer")
    with_buffer = any(group.buffer for group in groups)
    if with_buffer:
        buffer_depth = [g.buffer.get("buffer_depth_mean", np.nan) for g in groups]
        right.plot(x, buffer_depth, color="C3", linestyle="--", label="mean depth held in the buffer")
    right.set_ylabel("depth k (self-iteration steps)")
    for axis in (left, right):
        axis.set_xlabel("groups, in the order they finished")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    _suptitle(figure, f"Fig. 6: learnability and depth of buffer-drawn groups ({window}-group moving average)", title)
    paths = [_save(plt, figure, folder / FIG6_FILE)]
    if not with_buffer:
        return paths

    figure, axis = plt.subplots(figsize=(7, 4.2))
    axis.plot(x, [g.buffer.get("buffer_distinct_tasks", np.nan) for g in groups], color="C0",
              label="distinct tasks in the buffer")
    axis.plot(x, [g.buffer.get("buffer_size", np.nan) for g in groups], color="C7", linestyle="--",
              label="instances in the buffer")
    axis.set_xlabel("groups, in the order they finished")
    axis.set_ylabel("count after the group was observed")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    _suptitle(figure, "Fig. 7: distinct tasks in the buffer over the run", title)
    paths.append(_save(plt, figure, folder / FIG7_FILE))
    return paths


def plot_buffer(snapshot: BufferSnapshot, folder: Path, title: str) -> list[Path]:
    """The histogram of the held instances' scores, and their depths; returns the files written."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    scores = [instance.score for instance in snapshot.instances]
    figure, axis = plt.subplots(figsize=(7, 4.2))
    axis.hist(scores, bins=np.linspace(0.0, 0.25, 26), color="C0", edgecolor="white")
    axis.set_xlabel("learnability score S (0.25 is the largest)")
    axis.set_ylabel("instances")
    axis.grid(alpha=0.3)
    _suptitle(figure, f"Buffer scores: {len(scores)} instances at step {snapshot.step}", title)
    paths = [_save(plt, figure, folder / SCORES_FILE)]

    depths = [instance.depth for instance in snapshot.instances]
    figure, axis = plt.subplots(figsize=(7, 4.2))
    top = max(depths, default=0)
    axis.bar(range(top + 1), [depths.count(depth) for depth in range(top + 1)], color="C2")
    axis.set_xlabel("depth k of the instance's latest iterate")
    axis.set_ylabel("instances")
    axis.set_xticks(range(top + 1))
    axis.grid(alpha=0.3, axis="y")
    _suptitle(figure, f"Buffer depths: {len({i.task.task_id for i in snapshot.instances})} distinct tasks", title)
    paths.append(_save(plt, figure, folder / DEPTHS_FILE))
    return paths


def _suptitle(figure, head: str, title: str) -> None:  # type: ignore[no-untyped-def]
    """``head`` over ``title`` (what was run), wrapped to the figure's width."""
    width = int(figure.get_figwidth() * 11)
    figure.suptitle("\n".join([*textwrap.wrap(head, width), *textwrap.wrap(title, width)]), fontsize=11)


def _save(plt, figure, path: Path) -> Path:  # type: ignore[no-untyped-def]
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
