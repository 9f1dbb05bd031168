"""The command line, run as a user runs it: a separate process, JSON out, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACELEDGER_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "faceledger.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_detect_json_and_annotation(people, tmp_path):
    out = run("detect", str(people / "face_recognition_examples" / "two_people.jpg"), "--annotate", str(tmp_path),
              home=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["faces"]) == 2 and result["model_id"].startswith("face_recognition_sface")
    assert {"box", "landmarks", "confidence", "quality"} <= set(result["faces"][0])
    assert (tmp_path / "two_people.faces.jpg").stat().st_size > 10_000


def test_compare_same_and_different_people(people, tmp_path):
    ex = people / "face_recognition_examples"
    same = run("compare", str(ex / "obama.jpg"), str(ex / "obama2.jpg"), "--fmr", "1e-4", home=tmp_path)
    diff = run("compare", str(ex / "obama.jpg"), str(ex / "biden.jpg"), "--fmr", "1e-4", home=tmp_path)
    assert same.returncode == 0 and diff.returncode == 0, same.stderr + diff.stderr
    same, diff = json.loads(same.stdout), json.loads(diff.stdout)
    assert same["match"] is True and diff["match"] is False
    assert same["fmr"] < 1e-4 < diff["fmr"] and same["target_fmr"] == 1e-4


def _bad_input(kind: str, people) -> bytes:
    if kind == "truncated_jpeg":  # a real photo cut short: the header parses, the pixels run out
        return (people / "face_recognition_examples" / "obama.jpg").read_bytes()[:5000]
    return {"empty": b"",
            "gif": b"GIF89a not really",  # not a supported format
            "jpeg_magic_only": b"\xff\xd8\xff\xe0" + b"\x00" * 100,  # JPEG signature, no JPEG after it
            }[kind]


@pytest.mark.parametrize("kind, code", [("empty", "EMPTY_IMAGE"), ("gif", "INVALID_IMAGE"),
                                        ("jpeg_magic_only", "INVALID_IMAGE"), ("truncated_jpeg", "TRUNCATED_IMAGE")])
def test_bad_input_gives_its_error(tmp_path, people, kind, code):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(_bad_input(kind, people))
    out = run("compare", str(bad), str(people / "face_recognition_examples" / "obama.jpg"), home=tmp_path)
    assert out.returncode == 2
    error = json.loads(out.stdout)["error"]
    assert error["code"] == code and error["message"]
    assert "Traceback" not in out.stderr


def test_compare_refuses_multi_face_image_unless_told(people, tmp_path):
    ex = people / "face_recognition_examples"
    out = run("compare", str(ex / "two_people.jpg"), str(ex / "obama.jpg"), home=tmp_path)
    assert out.returncode == 2 and json.loads(out.stdout)["error"]["code"] == "MANY_FACES"
    ok = run("compare", str(ex / "two_people.jpg"), str(ex / "obama.jpg"), "--face-a", "0", home=tmp_path)
    assert ok.returncode == 0


def test_models_lists_files_and_hashes(tmp_path):
    out = run("models", "--profile", "accurate", home=tmp_path)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert set(info["models"]) == {"detector", "sface", "dlib"}
    assert all(len(m["sha256"]) == 64 for m in info["models"].values())


def test_engine_stays_healthy_after_bad_input(engine, people):
    from faceledger.errors import FaceledgerError

    for bad in (b"", b"\x00" * 1000, b"\x89PNG\r\n\x1a\n", (people / "face_recognition_examples" /
                                                             "obama.jpg").read_bytes()[:5000]):
        with pytest.raises(FaceledgerError):
            engine.analyze(bad)
    assert len(engine.analyze(people / "face_recognition_examples" / "obama.jpg")) == 1


def test_cli_operations_are_audited(people, tmp_path):
    ex = people / "face_recognition_examples"
    run("detect", str(ex / "obama.jpg"), home=tmp_path)
    run("compare", str(ex / "obama.jpg"), str(ex / "biden.jpg"), home=tmp_path)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    run("compare", str(bad), str(ex / "obama.jpg"), home=tmp_path)
    out = run("audit", "export", "--format", "jsonl", home=tmp_path)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["operation"], r["outcome"]) for r in rows] == [("detect", "ok"), ("compare", "ok"),
                                                               ("compare", "EMPTY_IMAGE")]
    assert rows[1]["decision"] == "no match" and rows[0]["purpose"].startswith("command line")
    assert run("audit", "verify", home=tmp_path).returncode == 0
