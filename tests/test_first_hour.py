"""A new user's first hour: commands without evaluation data say what is missing, the CLI sees every
tenant's collections, and the state a test run leaves behind is nobody's business."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def cli(home, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceledger.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "FACELEDGER_HOME": str(home), **(env or {})}, timeout=120)


@pytest.mark.parametrize("command,missing", [
    (("eval", "lfw"), "lfw/pairs.txt"),
    (("eval", "lfw-identify"), "lfw"),
    (("eval", "calibrate"), "lfw"),
    (("report",), "lfw/pairs.txt"),
])
def test_evaluations_without_data_say_what_is_missing_in_one_line(tmp_path, command, missing):
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = cli(tmp_path / "home", *command, "--data", str(empty))
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert str(empty / missing) in lines[0].replace("\n", "")


def test_report_asks_for_the_demographic_labels_it_needs(tmp_path, data_dir):
    partial = tmp_path / "partial"
    (partial / "lfw").mkdir(parents=True)
    (partial / "lfw" / "pairs.txt").write_text((data_dir / "lfw" / "pairs.txt").read_text())
    (partial / "lfw" / "Someone").mkdir()
    (partial / "lfw" / "Someone" / "Someone_0001.jpg").write_bytes(b"")
    out = cli(tmp_path / "home", "report", "--data", str(partial))
    assert out.returncode == 2 and "demographics.csv" in out.stderr


def test_cli_tenant_option_sees_the_api_tenants_collections(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "collections", "create", "staff", "--tenant", "acme").returncode == 0
    assert json.loads(cli(home, "collections", "list").stdout) == []  # tenant "default" has none
    listed = json.loads(cli(home, "collections", "list", env={"FACELEDGER_TENANT": "acme"}).stdout)
    assert [c["name"] for c in listed] == ["staff"]
    assert [c["tenant"] for c in json.loads(cli(home, "collections", "list", "--tenant", "acme").stdout)] == ["acme"]
