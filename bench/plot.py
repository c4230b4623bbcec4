"""Figures (matplotlib, Agg backend, atomic writes): accuracy against latency with its Pareto front,
and one confusion matrix per file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecifar.bench.core import finite, measured
from edgecifar.bench.pareto import pareto_front
from edgecifar.errors import MissingDependency
from edgecifar.fileio import atomic_path


def require_matplotlib() -> None:
    """Fail before any measurement when plots are asked for and matplotlib is absent (not after it)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise MissingDependency("plots need matplotlib: pip install matplotlib (or 'edgecifar[train]')")


def _pyplot():
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Up to this many points every point is labelled; past it (a whole study in one plot) points are coloured
#: by model family, with a legend, and only the Pareto front is labelled.
LABEL_ALL = 14
_PRECISIONS = ("_mixed_int8", "_int16x8", "_int8", "_fp32", "_fp16", "_dynamic")   # compound suffixes first
#: Precisions computed in integers: drawn as circles, the others as squares.
INTEGER_PRECISIONS = ("int8", "int16x8", "mixed_int8")


def labels(rows: list[dict], multi_threads: bool) -> list[str]:
    """Each row's name as the bench's table shows it (files sharing a name get their folders), with its thread
    count when the plot mixes several."""
    from edgecifar.bench.report import display_names

    names = display_names(rows)
    return [f"{n} ({r['threads']}t)" for n, r in zip(names, rows)] if multi_threads else names


def at_chance(row: dict, classes: int = 10) -> bool:
    """Whether a file's accuracy is indistinguishable from guessing (chance inside its 95% interval)."""
    lo, hi = row.get("ci_low"), row.get("ci_high")
    return finite(lo) and finite(hi) and lo <= 1 / classes <= hi


def family(row: dict) -> str:
    """The model a file holds, whatever its precision: ``deeper_int8.tflite`` -> ``deeper``."""
    stem = Path(row["file"]).stem
    for suffix in _PRECISIONS:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def plotted(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """What the plot shows of ``rows``: the timing references (at chance: a line at their latency) and the
    points, one per other measured row with an accuracy and a positive latency (a log axis has no zero)."""
    timed = [r for r in rows if measured(r) and finite(r.get("accuracy")) and finite(r.get("latency_ms"))
             and r["latency_ms"] > 0]
    return [r for r in timed if at_chance(r)], [r for r in timed if not at_chance(r)]


def pareto_plot(rows: list[dict], path: str | Path, title: str = "CIFAR-10 top-1 against latency") -> Path:
    """Accuracy (%) against median batch-1 latency (ms, log axis); the Pareto front drawn; points labelled
    (all of them, or past ``LABEL_ALL`` points the front only, with families told apart by colour)."""
    plt = _pyplot()
    references, ok = plotted(rows)
    timed = references + ok
    multi = len({r.get("threads") for r in timed}) > 1
    crowded = len(ok) > LABEL_ALL
    names = dict(zip(map(id, timed), labels(timed, multi)))
    fig, ax = plt.subplots(figsize=(10, 6.5) if crowded else (8, 5.5), dpi=120)
    for r in references:  # an untrained timing reference: its latency is the point, not its accuracy
        ax.axvline(r["latency_ms"], color="0.4", ls=":", lw=1.2,
                   label=f"{names[id(r)]} (untrained: latency only)")
    if ok:
        lat = np.array([r["latency_ms"] for r in ok])
        acc = np.array([100 * r["accuracy"] for r in ok])
        lo = np.array([100 * r["ci_low"] if finite(r.get("ci_low")) else a for r, a in zip(ok, acc)])
        hi = np.array([100 * r["ci_high"] if finite(r.get("ci_high")) else a for r, a in zip(ok, acc)])
        front = pareto_front(list(zip(lat.tolist(), acc.tolist())))
        if crowded:
            _family_points(ax, plt, ok, lat, acc, lo, hi)
        else:
            ax.errorbar(lat, acc, yerr=[acc - lo, hi - acc], fmt="o", color="tab:blue", ecolor="lightsteelblue",
                        capsize=3, label="model file (95% CI)")
        ax.step(lat[front], acc[front], where="post", color="tab:red", lw=1.5, label="Pareto front")
        ax.plot(lat[front], acc[front], "o", mfc="none", mec="tab:red", ms=11)
        if crowded:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="○ integer  □ float",
                      title_fontsize=7)
        else:
            ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no successful rows", ha="center", va="center", transform=ax.transAxes)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 3.0, 5.0)))
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("median latency at batch 1 (ms, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if timed:  # room on the right for the slowest points' labels
        every = [r["latency_ms"] for r in timed]
        ax.set_xlim(min(every) / 1.15, max(every) * 1.9)
    fig.tight_layout()
    if ok:
        shown = [i for i in range(len(ok)) if not crowded or i in set(front)]
        _place_labels(fig, ax, [names[id(ok[i])] for i in shown], lat[shown], acc[shown])
    return _save(fig, plt, path)


def _family_points(ax, plt, rows, lat, acc, lo, hi) -> None:
    """One colour per model family (seeds and precisions of a model share it), circles integer, squares float."""
    names = list(dict.fromkeys(family(r) for r in rows))
    colours = plt.get_cmap("tab20")

    def integer(r: dict) -> bool:
        return r.get("precision") in INTEGER_PRECISIONS

    for k, name in enumerate(names):
        colour = colours(k % 20)
        for is_integer in (True, False):
            idx = [i for i, r in enumerate(rows) if family(r) == name and integer(r) == is_integer]
            if not idx:
                continue
            ax.errorbar(lat[idx], acc[idx], yerr=[acc[idx] - lo[idx], hi[idx] - acc[idx]],
                        fmt="o" if is_integer else "s", ms=5, color=colour, ecolor=colour, elinewidth=0.6, alpha=0.9,
                        capsize=2, label=name if is_integer or not any(family(r) == name and integer(r)
                                                                       for r in rows) else None)


def _place_labels(fig, ax, texts, xs, ys) -> None:
    """Label every point, trying offsets around it until the label overlaps no label placed before
    (greedy, fastest point first); a leader line joins far-placed labels to their point."""
    candidates = [(6, 5), (6, -11), (-6, 5), (-6, -11)]
    candidates += [(dx, dy) for step in range(1, 16) for dx in (6, -6, 24, -24)
                   for dy in (5 + 10 * step, -11 - 10 * step)]
    from matplotlib.text import Text

    fig.canvas.draw()  # settle the axes limits and layout: transforms are lazy until a draw
    renderer = fig.canvas.get_renderer()
    from matplotlib.transforms import Bbox

    points = ax.transData.transform(np.column_stack([xs, ys]))
    placed = [Bbox.from_extents(x - 5, y - 5, x + 5, y + 5) for x, y in points]  # keep markers visible
    axes_box = ax.get_window_extent(renderer)
    for i in np.argsort(xs, kind="stable"):
        chosen = None
        for dx, dy in candidates:
            note = ax.annotate(texts[i], (xs[i], ys[i]), textcoords="offset points", xytext=(dx, dy), fontsize=7,
                               ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top",
                               arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5) if abs(dy) > 12 or abs(dx) > 6 else None)
            note.update_positions(renderer)
            box = Text.get_window_extent(note, renderer).expanded(1.04, 1.15)  # the text, not its leader line
            inside = axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1 and axes_box.y0 <= box.y0 and box.y1 <= axes_box.y1
            if inside and not any(box.overlaps(other) for other in placed):
                chosen = box
                break
            note.remove()
        if chosen is None:  # nowhere free: keep the first position
            ax.annotate(texts[i], (xs[i], ys[i]), textcoords="offset points", xytext=candidates[0], fontsize=7)
        else:
            placed.append(chosen)


def confusion_png(matrix: np.ndarray, names: tuple[str, ...], path: str | Path, title: str) -> Path:
    """A confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.8), dpi=120)
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    peak = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > peak / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
