"""LFW protocol on real data. CI (`make test-all`) runs the fast profile on folds 1 and 2; the README gives all ten."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from faceledger.evaluation.lfw import read_pairs, ten_fold


def test_pairs_file_is_the_official_protocol(data_dir):
    pairs = read_pairs(data_dir / "lfw" / "pairs.txt")
    assert len(pairs) == 6000 and pairs.same.sum() == 3000
    assert np.bincount(pairs.fold).tolist() == [600] * 10
    assert all((data_dir / "lfw" / p).is_file() for p in pairs.images[:50])


def test_ten_fold_threshold_is_chosen_on_other_folds():
    """A fold whose scores are shifted cannot choose its own threshold."""
    from faceledger.evaluation.lfw import Pairs

    same = np.tile(np.r_[np.ones(5, bool), np.zeros(5, bool)], 2)
    fold = np.repeat([0, 1], 10)
    scores = np.where(same, 0.8, 0.2) + np.where(fold == 1, 0.5, 0.0)  # fold 1: impostors at 0.7
    pairs = Pairs(["a"] * 20, ["b"] * 20, same, fold)
    r = ten_fold(scores, pairs)
    assert r["accuracy_per_fold"][0] == 0.5  # threshold from fold 1 (between 0.7 and 1.3) rejects all of fold 0
    assert r["accuracy_per_fold"][1] == 0.5  # threshold from fold 0 accepts every pair of fold 1


@pytest.mark.slow  # embeds the images of 1,200 LFW pairs (folds 1-2), then runs again from the cache
def test_eval_lfw_two_folds_fast(data_dir, tmp_path):
    env = {**os.environ, "FACELEDGER_HOME": str(tmp_path), "FACELEDGER_DATA_DIR": str(data_dir)}
    cmd = [sys.executable, "-m", "faceledger.cli", "eval", "lfw", "--profile", "fast", "--folds", "1,2"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "reports" / "lfw-fast-folds1_2.json").read_text())
    assert result["pairs"] == 1200 and result["folds"] == [0, 1]
    assert result["accuracy_mean"] >= 0.99
    assert result["tar_at_far"]["0.001"] >= 0.95 and result["eer"] < 0.02
    assert sum(result["detection"].values()) == result["images"]
    assert (tmp_path / "reports" / "lfw-fast-folds1_2.png").stat().st_size > 20_000
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)  # from the cache
    assert again.returncode == 0
    cached = json.loads((tmp_path / "reports" / "lfw-fast-folds1_2.json").read_text())
    assert cached["accuracy_mean"] == result["accuracy_mean"] and cached["embedding_seconds"] < 5


@pytest.mark.slow  # open-set 1:N over all 13,233 LFW images
def test_eval_lfw_identify_fast(data_dir, tmp_path):
    """Open-set 1:N over all of LFW through the real gallery (embeds 13,233 images on a fresh machine)."""
    env = {**os.environ, "FACELEDGER_HOME": str(tmp_path), "FACELEDGER_DATA_DIR": str(data_dir)}
    out = subprocess.run([sys.executable, "-m", "faceledger.cli", "eval", "lfw-identify", "--profile", "fast"],
                         capture_output=True, text=True, env=env, timeout=2400)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "reports" / "lfw-identify-fast.json").read_text())
    assert r["gallery_subjects"] == 1680 and r["mated_probes"] == 7484 and r["nonmated_probes"] == 4069
    assert r["rank1"] >= 0.97
    assert r["fnir_at_fpir"]["0.01"]["fnir"] < 0.10
    assert r["fnir_at_fpir"]["0.01"]["nonmated_probes_above"] <= 40  # 1% of 4,069
    assert (tmp_path / "reports" / "lfw-identify-fast.png").stat().st_size > 10_000
