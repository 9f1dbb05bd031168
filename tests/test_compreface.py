"""CompreFace's REST API with the real client: the `compreface-sdk` package (in its own virtual environment, since it
needs urllib3<2) runs its recognition, detection and verification flows against faceledger; refusals carry
CompreFace's codes, each audited, nothing changed; an erasure through CompreFace is the native erasure, and erased
faces come back from no front end."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image

from conftest import REQUIRE_DATA, ROOT
from faceledger.api.app import create_app
from faceledger.gallery.records import Consent
from faceledger.service import Actor, Faceledger
from inprocess import served

FLOWS = Path(__file__).parent / "compreface" / "flows.py"


@pytest.fixture(scope="module")
def sdk_python() -> str:
    """The Python of the SDK's virtual environment (`make setup` builds .venv-compreface)."""
    python = os.environ.get("FACELEDGER_COMPREFACE_PYTHON") or str(ROOT / ".venv-compreface" / "bin" / "python")
    if not Path(python).is_file():
        message = f"compreface-sdk's virtual environment is missing ({python}): run `make setup`"
        if REQUIRE_DATA:
            pytest.fail(message)
        pytest.skip(message)
    return python


@pytest.fixture(scope="module")
def server(settings, engine, tmp_path_factory):
    home = tmp_path_factory.mktemp("compreface")
    fl = Faceledger(settings.model_copy(update={"home": home}), engine)
    admin = Actor.local("acme")
    for name in ("staff", "other"):
        fl.create_collection(admin, name)
        fl.attest_consent(admin, name, "explicit-consent", "forms register 2026/11")
    keys = {
        "recognition": fl.create_key(Actor.local(), "acme", ["enroll", "identify", "verify"], "door, staff only",
                                     collection="staff")[0],
        "detection": fl.create_key(Actor.local(), "acme", ["detect"], "camera counting")[0],
        "verification": fl.create_key(Actor.local(), "acme", ["verify"], "kiosk")[0],
    }
    with served(create_app(faceledger=fl)) as url:
        yield {"url": url, "fl": fl, "keys": keys, "home": home}


def records(fl: Faceledger, since: int = 0) -> list[dict]:
    return [r for r in fl.audit.query(limit=100000) if r["seq"] > since]


def last_seq(fl: Faceledger) -> int:
    rows = fl.audit.query(limit=100000)
    return rows[-1]["seq"] if rows else 0


def test_the_sdk_flows(server, sdk_python, people, tmp_path):
    bbt = people / "bbt"
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), (128, 128, 128)).save(blank)
    images = {"amy1": bbt / "amy" / "amy1.png", "amy2": bbt / "amy" / "amy2.png", "amy3": bbt / "amy" / "amy3.png",
              "amy4": bbt / "amy" / "amy4.png", "sheldon1": bbt / "sheldon" / "sheldon1.png",
              "group": bbt / "bbt1.jpg", "blank": blank}
    domain, port = server["url"].rsplit(":", 1)
    cfg = {"domain": domain, "port": port, "recognition_key": server["keys"]["recognition"],
           "detection_key": server["keys"]["detection"], "verification_key": server["keys"]["verification"],
           "images": {k: str(v) for k, v in images.items()}}
    run = subprocess.run([sdk_python, str(FLOWS), json.dumps(cfg)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(run.stdout)

    # recognition: subjects and faces
    assert r["add_subject"] == {"subject": "Amy Farrah Fowler"}
    assert r["add_subject_again"]["code"] == 43
    amy1, amy2 = r["add_amy1"]["image_id"], r["add_amy2"]["image_id"]
    assert r["add_amy1"]["subject"] == "Amy Farrah Fowler" and len(amy1) == 36
    assert r["add_group"]["code"] == 31 and r["add_blank"]["code"] == 28
    assert r["list_faces"]["total_elements"] == 3 and {f["image_id"] for f in r["list_faces"]["faces"]} >= {amy1, amy2}
    assert r["subjects"] == {"subjects": ["Amy Farrah Fowler", "Sheldon"]}
    (face,) = r["recognize_amy"]["result"]
    assert face["subjects"][0]["subject"] == "Amy Farrah Fowler" and face["subjects"][0]["similarity"] >= 0.8
    assert len(face["subjects"]) == 2 and face["subjects"][1]["similarity"] < 0.8  # prediction_count 2
    assert len(face["landmarks"]) == 5 and set(face["box"]) == {"probability", "x_max", "y_max", "x_min", "y_min"}
    assert "plugins_versions" in r["recognize_amy"]  # status=true
    assert r["recognize_blank"]["code"] == 28
    assert r["recognize_plugins"]["code"] == 26 and "age" in r["recognize_plugins"]["message"]
    assert r["verify_face"]["result"][0]["similarity"] >= 0.8
    assert r["verify_face"]["result"][0]["subject"] == "Amy Farrah Fowler"
    assert r["rename"] == {"updated": True} and r["rename_missing"]["code"] == 42
    assert r["subjects_renamed"]["subjects"] == ["Amy Farrah Fowler", "Sheldon Cooper"]

    # detection and verification
    assert len(r["detect"]["result"]) >= 3 and r["detect_blank"]["code"] == 28
    assert r["verify_same"]["result"][0]["face_matches"][0]["similarity"] >= 0.8
    assert r["verify_other"]["result"][0]["face_matches"][0]["similarity"] < 0.8
    assert r["verify_group_source"]["code"] == 31

    # erasure
    assert r["delete_one"] == {"image_id": amy2, "subject": "Amy Farrah Fowler"}
    assert r["delete_missing"]["code"] == 44
    assert r["delete_all_of"] == {"deleted": 1}
    assert r["delete_subject"] == {"subject": "Amy Farrah Fowler"} and r["delete_subject_missing"]["code"] == 42
    assert r["subjects_after"] == {"subjects": []} and r["faces_after"]["total_elements"] == 0
    assert r["recognize_after"]["result"][0]["subjects"] == []

    # every call left its record, with the key's purpose
    fl = server["fl"]
    rows = records(fl)
    enrol = [x for x in rows if x["operation"] == "enroll"]
    assert [x["outcome"] for x in enrol] == ["ok", "ok", "ok", "MANY_FACES", "NO_FACE"]
    assert {x["purpose"] for x in enrol} == {"door, staff only"} and {x["collection"] for x in enrol} == {"staff"}
    erase = [x for x in rows if x["operation"] == "erase" and x["outcome"] == "ok"]
    assert [x["decision"] for x in erase] == ["erased 1 faces", "erased 1 faces", "erased 1 faces"]
    assert [x["subject_ids"] for x in erase] == [["Amy Farrah Fowler"], ["Sheldon Cooper"], ["Amy Farrah Fowler"]]
    assert {x["operation"] for x in rows} >= {"identify", "verify", "detect", "compare", "subject.rename",
                                              "subject.create"}


def post(server, path: str, key: str | None, **kwargs) -> httpx.Response:
    headers = {"x-api-key": key} if key else {}
    return httpx.post(server["url"] + path, headers=headers, timeout=60, **kwargs)


def test_refusals_carry_compreface_codes_and_are_audited(server, people):
    fl = server["fl"]
    amy1 = (people / "bbt" / "amy" / "amy1.png").read_bytes()
    key = server["keys"]["recognition"]
    files = {"file": ("amy1.png", amy1)}
    unbound = fl.create_key(Actor.local(), "acme", ["enroll", "identify"], "not bound")[0]
    revoked, info = fl.create_key(Actor.local(), "acme", ["enroll"], "revoked soon", collection="staff")
    fl.revoke_key(Actor.local(), info["key_id"])
    size = fl.count_faces(Actor.local("acme"), "staff")
    before = last_seq(fl)
    cases = [
        (None, files, 400, 20),
        ("fl_unknown_key", files, 404, 10),
        (unbound, files, 404, 10),
        (revoked, files, 404, 10),
        (server["keys"]["detection"], files, 404, 10),
        (key, {"file": ("big.png", b"\x89PNG" + b"\0" * (5 * 1024 * 1024 + 1))}, 400, 26),
        (key, {"file": ("notes.png", b"not an image at all")}, 400, 21),
    ]
    for k, body, status, number in cases:
        r = post(server, "/api/v1/recognition/faces?subject=Amy", k, files=body)
        assert (r.status_code, r.json()["code"]) == (status, number), (k, r.text)
    scoped = fl.create_key(Actor.local(), "acme", ["identify"], "search only", collection="staff")[0]
    r = post(server, "/api/v1/recognition/faces?subject=Amy", scoped, files=files)
    assert r.status_code == 403 and r.json()["code"] == 10
    assert fl.count_faces(Actor.local("acme"), "staff") == size  # nothing changed
    rows = [x for x in records(fl, before) if not x["operation"].startswith("key.")]
    assert all(x["outcome"] != "ok" for x in rows) and len(rows) >= 4
    assert {x["outcome"] for x in rows} >= {"UNAUTHORIZED", "PAYLOAD_TOO_LARGE", "INVALID_IMAGE", "FORBIDDEN"}

    # base64 JSON bodies work like files
    r = post(server, "/api/v1/recognition/faces?subject=Base64", key, json={"file": base64.b64encode(amy1).decode()})
    assert r.status_code == 201 and r.json()["subject"] == "Base64"
    r = post(server, "/api/v1/recognition/faces?subject=Base64", key, json={"file": "%%% not base64"})
    assert r.json()["code"] == 21


def test_a_bound_key_reaches_one_collection_through_every_front_end(server, people):
    fl = server["fl"]
    key = server["keys"]["recognition"]
    auth = {"Authorization": f"Bearer {key}"}
    amy1 = (people / "bbt" / "amy" / "amy1.png").read_bytes()
    listed = httpx.get(server["url"] + "/v1/collections", headers=auth)
    assert [c["name"] for c in listed.json()] == ["staff"]
    r = httpx.post(server["url"] + "/v1/collections/other/identify", headers=auth, files={"image": amy1})
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    assert records(fl)[-1]["outcome"] == "FORBIDDEN"
    assert httpx.get(server["url"] + "/v1/collections/other/subjects", headers=auth).status_code == 403


def test_erasure_through_compreface_is_the_native_erasure(server, people):
    """Enrolled natively, erased through CompreFace: the same receipt fields and audit record as a native erasure,
    and the face is gone from the native API, Rekognition's listing and CompreFace's."""
    fl = server["fl"]
    admin = Actor.local("acme")
    amy = people / "bbt" / "amy"
    consent = Consent("explicit-consent", "form 12")
    # someone who stays, so that the search at the end has candidates whichever tests ran before this one
    fl.enroll(admin, "staff", "Stays", [people / "bbt" / "penny" / "penny1.png"], consent=consent)
    fl.enroll(admin, "staff", "Erased Person", [amy / "amy1.png"], consent=consent)
    native = fl.erase_subject(admin, "staff", "Erased Person")
    fl.enroll(admin, "staff", "Erased Person", [amy / "amy1.png"], consent=consent)
    uuid = fl.get_subject(admin, "staff", "Erased Person").faces[0].uuid
    # a face added through CompreFace keeps the person's own consent record (the attestation is for new persons)
    r = post(server, "/api/v1/recognition/faces?subject=Erased Person", server["keys"]["recognition"],
             files={"file": ("amy2.png", (amy / "amy2.png").read_bytes())})
    assert r.status_code == 201
    assert fl.get_subject(admin, "staff", "Erased Person").consent["reference"] == "form 12"
    r = post(server, "/api/v1/recognition/faces?subject=~sneaky", server["keys"]["recognition"],
             files={"file": ("amy2.png", (amy / "amy2.png").read_bytes())})
    assert r.status_code == 400 and r.json()["code"] == 26
    before = last_seq(fl)
    r = httpx.delete(server["url"] + "/api/v1/recognition/subjects/Erased Person",
                     headers={"x-api-key": server["keys"]["recognition"]})
    assert r.json() == {"subject": "Erased Person"}
    (record,) = [x for x in records(fl, before) if x["operation"] == "erase"]
    native_record = [x for x in records(fl) if x["seq"] == native.audit_seq][0]
    same = ("operation", "collection", "subject_ids", "outcome")
    assert {k: record[k] for k in same} == {k: native_record[k] for k in same}
    assert (native_record["decision"], record["decision"]) == ("erased 1 faces", "erased 2 faces")
    assert fl.collection_faces(admin, "staff", uuids=[uuid]) == []
    r = httpx.get(server["url"] + "/api/v1/recognition/faces", headers={"x-api-key": server["keys"]["recognition"]})
    assert uuid not in [f["image_id"] for f in r.json()["faces"]]
    found = fl.search(admin, "staff", image=amy / "amy3.png", top_k=50)
    assert found.hits and uuid not in [h.face.face.uuid for h in found.hits]
