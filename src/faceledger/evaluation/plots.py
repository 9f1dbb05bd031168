"""ROC and DET curves as a PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from faceledger.evaluation.metrics import error_curve  # noqa: E402


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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def group_bars_png(rows: dict[str, dict], path: Path, title: str, ylabel: str) -> Path:
    """Rates per group with 95% intervals; ``rows``: group -> {"rate", "ci95", "conclusive"}."""
    names = list(rows)
    values = np.array([rows[n]["rate"] or 0 for n in names], float)
    ci = np.array([rows[n]["ci95"] or [0, 0] for n in names], float)
    err = np.abs(np.stack([values - ci[:, 0], ci[:, 1] - values]))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names) + 2), 4))
    colours = ["tab:blue" if rows[n].get("conclusive", True) else "tab:grey" for n in names]
    ax.bar(names, values, yerr=err, capsize=4, color=colours)
    ax.set(title=title, ylabel=ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    if not all(rows[n].get("conclusive", True) for n in names):
        ax.text(0.99, 0.97, "grey: too little data to conclude", transform=ax.transAxes, ha="right", va="top",
                fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def score_histograms_png(samples: dict[str, np.ndarray], thresholds: dict[str, float], path: Path,
                         title: str) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, s in samples.items():
        if len(s):
            ax.hist(s, bins=120, density=True, histtype="step", label=f"{label} (n={len(s):,})")
    for label, t in thresholds.items():
        ax.axvline(t, linestyle=":", color="black", linewidth=1)
        ax.text(t, ax.get_ylim()[1] * 0.95, f" {label}", fontsize=8, rotation=90, va="top")
    ax.set(title=title, xlabel="similarity of impostor pairs", ylabel="density", yscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
