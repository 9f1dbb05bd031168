"""The report's plots as PNG: ROC and DET curves, FNIR against FPIR, rates per group, impostor scores."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from faceledger.evaluation.metrics import error_curve  # noqa: E402


def _save(fig, path: Path, dpi: int = 110) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def roc_det_png(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """``curves``: label -> (genuine scores, impostor scores). Writes ROC (left) and DET (right)."""
    fig, (roc, det) = plt.subplots(1, 2, figsize=(12, 5))
    for label, (genuine, impostor) in curves.items():
        c = error_curve(genuine, impostor)
        keep = c.fmr > 0  # FMR 0 has no place on a log axis
        roc.plot(c.fmr[keep], c.tmr[keep], label=label)
        det.plot(c.fmr[keep], np.maximum(c.fnmr[keep], 0.5 / len(genuine)), label=label)
    roc.set(xscale="log", xlabel="False match rate (FMR)", ylabel="True match rate (1 - FNMR)", title="ROC")
    det.set(xscale="log", yscale="log", xlabel="False match rate (FMR)", ylabel="False non-match rate (FNMR)",
            title="DET")
    for ax in (roc, det):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best")
    fig.suptitle(title)
    return _save(fig, path)


def fnir_fpir_png(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """Open-set identification error trade-off: FNIR against FPIR (log-log)."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for label, (fpir, fnir) in curves.items():
        keep = fpir > 0  # FPIR 0 has no place on a log axis
        ax.plot(fpir[keep], np.maximum(fnir[keep], 1e-4), label=label)
    for f in (1e-2, 1e-3):
        ax.axvline(f, color="grey", linestyle=":", linewidth=1)
    ax.set(xscale="log", yscale="log", xlabel="False positive identification rate (FPIR)",
           ylabel="False negative identification rate (FNIR)", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)


def group_bars_png(rows: dict[str, dict], path: Path, title: str, ylabel: str, *, unit: str = "%",
                   count: str = "images", target: float | None = None) -> Path:
    """Rates per group; ``rows``: group -> {"rate", "ci95", "trials", "conclusive"}; ``target``: a dashed line.

    Conclusive groups are drawn with their 95% intervals, on a log axis where their rates span
    more than a decade. Groups with too little data to conclude stand apart in a panel of their
    own on the right, grey and hatched, without whiskers and on their own scale, so that a
    noisy figure from a handful of pairs neither dwarfs nor squeezes the conclusive ones. Each
    bar carries its rounded value and the group's count.
    """
    conclusive = [n for n in rows if rows[n].get("conclusive", True) and rows[n]["rate"] is not None]
    loose = [n for n in rows if n not in conclusive]
    panels = [p for p in (conclusive, loose) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.5, 1.1 * len(rows) + 3), 4.4), squeeze=False,
                             gridspec_kw={"width_ratios": [max(len(p), 1.5) for p in panels]})
    for ax, names in zip(axes[0], panels):
        solid = names is conclusive
        x = np.arange(len(names))
        values = np.array([rows[n]["rate"] or 0.0 for n in names], float)
        ci = np.array([rows[n]["ci95"] or [v, v] for n, v in zip(names, values)], float)
        tops = np.append(ci[:, 1] if solid else values, target or 0)
        positive = values[values > 0]
        log = solid and len(positive) >= 2 and positive.max() / positive.min() > 10
        floor = positive.min() / 3 if log else 0.0
        heights = np.maximum(values, floor) - floor
        if solid:
            err = np.abs(np.stack([values - ci[:, 0], ci[:, 1] - values]))
            if log:  # a lower bound under the floor stops at the bottom of the log axis
                err[0] = np.minimum(err[0], np.maximum(values - floor, 0))
            ax.bar(x, heights, bottom=floor, yerr=err, capsize=4, color="tab:blue")
            ax.set_title("95% intervals shown", fontsize=9)
        else:
            ax.bar(x, heights, bottom=floor, color="lightgrey", edgecolor="grey", hatch="//")
            ax.set_title("not conclusive: too little data\n(own scale, no intervals)", fontsize=9, color="dimgrey")
            ax.tick_params(axis="y", colors="grey")
        if log:
            ax.set_yscale("log")
            ax.set_ylim(floor, tops.max() * 3)
        else:
            ax.set_ylim(0, (tops.max() or (1e-3 if unit == "%" else 1e-5)) * 1.25)
        ax.set_xlim(-0.7, len(names) - 0.3)
        if target:
            ax.axhline(target, color="tab:red", linestyle="--", linewidth=1)
            ax.annotate(f"target {rate_label(target, unit)}", (ax.get_xlim()[0], target), xytext=(2, 2),
                        textcoords="offset points", fontsize=7, color="tab:red")
        for xi, n, v, t in zip(x, names, values, tops):
            ax.annotate(rate_label(rows[n]["rate"], unit), (xi, max(t, floor) if log else t), ha="center",
                        va="bottom", xytext=(0, 3), textcoords="offset points", fontsize=8,
                        color="black" if solid else "dimgrey")
        ax.set_xticks(x, [f"{n}\n({_count(rows[n].get('trials'))} {count})" for n in names], fontsize=8)
        if not log:
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: rate_label(v, unit)))
        ax.grid(True, axis="y", which="both", alpha=0.3)
        if solid or len(panels) == 1:
            ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    fig.suptitle(textwrap.fill(title, max(40, int(fig.get_figwidth() * 11))), fontsize=11)
    return _save(fig, path, dpi=100)


def rate_label(value: float | None, unit: str = "%") -> str:
    """A rate rounded for a plot: two significant digits, as a percentage or in scientific notation."""
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    if unit == "%":
        return f"{float(f'{100 * value:.2g}'):g}%"
    return f"{value:.1e}".replace("e-0", "e-")


def _count(n) -> str:
    if n is None:
        return "?"
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{float(f'{n / size:.2g}'):g}{suffix}"
    return str(int(n))


FEW_SCORES = 10_000  # below this many sampled scores a histogram is noisy: drawn faint
TOO_FEW_SCORES = 200  # below this, not drawn at all


def score_histograms_png(samples: dict[str, np.ndarray], thresholds: dict[str, float], path: Path,
                         title: str) -> Path:
    """Impostor score densities (log axis); groups with few sampled pairs are drawn faint, as noisy."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    left_out = []
    for label, s in samples.items():
        if len(s) >= FEW_SCORES:
            ax.hist(s, bins=120, density=True, histtype="step", label=f"{label} (n={len(s):,})")
        elif len(s) >= TOO_FEW_SCORES:
            ax.hist(s, bins=40, density=True, histtype="step", linestyle=":", color="grey", alpha=0.6,
                    label=f"{label} (n={len(s):,}: few, noisy)")
        else:
            left_out.append(f"{label.removeprefix('within ')} ({len(s)})")
    if left_out:
        ax.text(0.01, 0.98, textwrap.fill(f"not drawn, under {TOO_FEW_SCORES} sampled pairs: " + ", ".join(left_out),
                                          60), transform=ax.transAxes, fontsize=7, va="top", color="dimgrey")
    for label, t in thresholds.items():
        ax.axvline(t, linestyle=":", color="black", linewidth=1)
        ax.text(t, ax.get_ylim()[1] * 0.95, f" {label}", fontsize=8, rotation=90, va="top")
    ax.set(title=title, xlabel="similarity of impostor pairs", ylabel="density", yscale="log")
    ax.legend(fontsize=8)
    return _save(fig, path, dpi=100)


def open_set_png(results: dict[str, dict], path: Path, title: str) -> Path:
    """``results``: profile -> `faceledger eval open-set` result. Left: measured FPIR against gallery size (faces),
    with Wilson 95% intervals, one line per profile and target, the targets dashed; hollow markers are figures
    that are not conclusive, and a measured 0 sits on the bottom edge. Right: FNIR against gallery size.
    Both at each profile's recommended margin (0 where none is recommended)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = {"fast": "o", "accurate": "s"}
    targets = sorted({f for r in results.values() for f in r["targets"]}, reverse=True)
    floor = min(targets) / 20 if targets else 1e-5
    for k, (profile, r) in enumerate(results.items()):
        margin = r["recommended_margin"]["margin"] or 0.0
        for j, f in enumerate(sorted(r["targets"], reverse=True)):
            colour = colours[(2 * k + j) % len(colours)]
            rows = [(g["faces"], x) for g in r["galleries"] for x in g["results"]
                    if x["policy"]["target_fpir"] == f and x["policy"]["margin"] == margin]
            if not rows:
                continue
            sizes = np.array([s for s, _ in rows], float)
            fpir = np.array([x["fpir"]["rate"] or 0.0 for _, x in rows])
            lo = np.array([x["fpir"]["ci95"][0] if x["fpir"]["ci95"] else 0.0 for _, x in rows])
            hi = np.array([x["fpir"]["ci95"][1] if x["fpir"]["ci95"] else 0.0 for _, x in rows])
            shown = np.maximum(fpir, floor)
            err = np.stack([shown - np.maximum(lo, floor), np.maximum(hi, floor) - shown])
            label = f"{profile}, target {f:g} (margin {margin:g})"
            left.errorbar(sizes, shown, yerr=np.maximum(err, 0), color=colour, capsize=3, linewidth=1, label=label)
            for (_, x), s, v in zip(rows, sizes, shown):
                left.plot(s, v, markers.get(profile, "o"), color=colour,
                          markerfacecolor=colour if x["fpir"]["conclusive"] else "white")
            fnir = np.array([x["fnir"]["rate"] or 0.0 for _, x in rows])
            right.plot(sizes, np.maximum(fnir, 1e-4), marker=markers.get(profile, "o"), color=colour, label=label)
    for f in targets:
        left.axhline(f, color="grey", linestyle="--", linewidth=1)
        left.text(0.01, f, f" target {f:g}", transform=left.get_yaxis_transform(), va="bottom", fontsize=7,
                  color="dimgrey")
    left.set(xscale="log", yscale="log", ylim=(floor * 0.8, None), xlabel="gallery size (faces)",
             ylabel="measured FPIR (non-mated searches decided 'match')",
             title="FPIR; hollow: not conclusive (< 30 expected events);\n0 events drawn at the bottom edge")
    right.set(xscale="log", yscale="log", xlabel="gallery size (faces)",
              ylabel="FNIR (mated searches not matched to their own subject)", title="FNIR")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def open_set_groups_png(groups: dict[str, dict], path: Path, title: str, target: float) -> Path:
    """FPIR per group of one attribute at one target (``groups``: group -> fpir figure), as group bars."""
    rows = {g: {"rate": x["rate"], "ci95": x["ci95"], "trials": x["trials"], "conclusive": x["conclusive"]}
            for g, x in groups.items()}
    return group_bars_png(rows, path, title, "FPIR (non-mated searches)", unit="%", count="searches", target=target)
