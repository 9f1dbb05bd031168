"""Rekognition's API with the real client: boto3's ``rekognition`` client, pointed at faceledger by ``endpoint_url``
and an AWS-style faceledger key, runs every supported operation on real faces; each answer validates against
botocore's own output shape; refusals come back as the client's typed exceptions, each audited, nothing changed."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from unittest import mock

import numpy as np
import pytest

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from botocore.validate import ParamValidator  # noqa: E402

import anyio  # noqa: E402

from faceledger.api.app import create_app  # noqa: E402
from faceledger.api.deps import record_pending_refusals  # noqa: E402
from faceledger.matching import similarity  # noqa: E402
from faceledger.service import Actor, Faceledger  # noqa: E402
from faceledger.service.guardrails import RateLimiter  # noqa: E402
from inprocess import served  # noqa: E402

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def server(settings, engine, tmp_path_factory):
    home = tmp_path_factory.mktemp("rekognition")
    fl = Faceledger(settings.model_copy(update={"home": home}), engine)
    secret, info = fl.create_key(Actor.local(), "acme", ["admin"], "rekognition compatibility test", aws=True)
    app = create_app(faceledger=fl)
    with served(app) as url:
        yield {"url": url, "fl": fl, "app": app, "akid": info["key_id"], "secret": secret}


def client(server, *, akid=None, secret=None, retries=0):
    return boto3.client("rekognition", endpoint_url=server["url"], region_name="eu-west-1",
                        aws_access_key_id=akid or server["akid"], aws_secret_access_key=secret or server["secret"],
                        config=Config(retries={"max_attempts": retries, "mode": "standard"}))


@pytest.fixture(scope="module")
def rk(server):
    return client(server)


def valid(rk, operation: str, response: dict) -> dict:
    """The response, checked against botocore's output shape of ``operation`` (types, required members, no
    member the shape does not have)."""
    shape = rk.meta.service_model.operation_model(operation).output_shape
    body = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    report = ParamValidator().validate(body, shape)
    assert not report.has_errors(), report.generate_report()
    return body


def image(path) -> dict:
    return {"Bytes": path.read_bytes()}


def error_of(call, *args, **kwargs) -> ClientError:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    return info.value


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def records(server, since: int = 0) -> list[dict]:
    return [r for r in server["fl"].audit.query(limit=100000) if r["seq"] > since]


def last_seq(server) -> int:
    rows = server["fl"].audit.query(limit=100000)
    return rows[-1]["seq"] if rows else 0


def attest(server, collection: str) -> None:
    server["fl"].attest_consent(Actor.local("acme"), collection, "explicit-consent", "forms register 2026/11")


def in_unit(b: dict) -> bool:
    return all(0 <= b[k] <= 1 for k in ("Left", "Top")) and 0 < b["Width"] <= 1 and 0 < b["Height"] <= 1


def test_collections_faces_and_search(rk, server, people):
    amy = people / "bbt" / "amy"
    r = valid(rk, "CreateCollection", rk.create_collection(CollectionId="staff"))
    assert r["StatusCode"] == 200 and r["CollectionArn"].endswith("collection/staff")
    assert code(error_of(rk.create_collection, CollectionId="staff")) == "ResourceAlreadyExistsException"
    assert "staff" in valid(rk, "ListCollections", rk.list_collections())["CollectionIds"]

    # no consent record travels with Rekognition's API: enrolment waits for the collection's attestation
    e = error_of(rk.index_faces, CollectionId="staff", Image=image(amy / "amy1.png"))
    assert code(e) == "AccessDeniedException" and "attest" in e.response["Error"]["Message"]
    assert records(server)[-1]["outcome"] == "CONSENT_REQUIRED"
    assert rk.describe_collection(CollectionId="staff")["FaceCount"] == 0
    attest(server, "staff")

    r = valid(rk, "IndexFaces", rk.index_faces(CollectionId="staff", Image=image(amy / "amy1.png"),
                                               ExternalImageId="amy1.png", DetectionAttributes=["DEFAULT"]))
    assert len(r["FaceRecords"]) == 1 and r["UnindexedFaces"] == []
    face = r["FaceRecords"][0]["Face"]
    assert face["ExternalImageId"] == "amy1.png" and in_unit(face["BoundingBox"])
    assert uuid.UUID(face["FaceId"]) and uuid.UUID(face["ImageId"]) and "UserId" not in face
    amy1 = face["FaceId"]
    amy2 = rk.index_faces(CollectionId="staff", Image=image(amy / "amy2.png"))["FaceRecords"][0]["Face"]["FaceId"]
    sheldon = people / "bbt" / "sheldon"
    sheldon1 = rk.index_faces(CollectionId="staff", Image=image(sheldon / "sheldon1.png"))["FaceRecords"][0]["Face"]
    d = valid(rk, "DescribeCollection", rk.describe_collection(CollectionId="staff"))
    assert d["FaceCount"] == 3 and d["UserCount"] == 0 and isinstance(d["CreationTimestamp"], dt.datetime)

    # 1:N by image: Amy's other photo finds Amy's faces above the default threshold, and not Sheldon's
    r = valid(rk, "SearchFacesByImage", rk.search_faces_by_image(CollectionId="staff", Image=image(amy / "amy3.png")))
    found = [m["Face"]["FaceId"] for m in r["FaceMatches"]]
    assert set(found) == {amy1, amy2}, r["FaceMatches"]
    assert all(m["Similarity"] >= 80 for m in r["FaceMatches"]) and in_unit(r["SearchedFaceBoundingBox"])
    # by a stored face: the face itself is not a match of itself
    r = valid(rk, "SearchFaces", rk.search_faces(CollectionId="staff", FaceId=amy1, FaceMatchThreshold=0))
    assert r["SearchedFaceId"] == amy1 and r["FaceMatches"][0]["Face"]["FaceId"] == amy2
    assert amy1 not in [m["Face"]["FaceId"] for m in r["FaceMatches"]]
    assert [m["Similarity"] for m in r["FaceMatches"]] == sorted((m["Similarity"] for m in r["FaceMatches"]),
                                                                 reverse=True)
    search = [x for x in records(server) if x["operation"] == "identify"][-1]
    assert search["outcome"] == "ok" and search["key_id"] == server["akid"]
    assert search["purpose"] == "rekognition compatibility test"

    # pages of faces
    first = valid(rk, "ListFaces", rk.list_faces(CollectionId="staff", MaxResults=2))
    rest = valid(rk, "ListFaces", rk.list_faces(CollectionId="staff", MaxResults=2, NextToken=first["NextToken"]))
    assert [f["FaceId"] for f in first["Faces"] + rest["Faces"]] == [amy1, amy2, sheldon1["FaceId"]]
    assert "NextToken" not in rest
    paged = rk.get_paginator("list_faces").paginate(CollectionId="staff", MaxResults=1)
    assert sum(len(p["Faces"]) for p in paged) == 3


def test_users_associate_search_and_erase(rk, server, people):
    amy, sheldon = people / "bbt" / "amy", people / "bbt" / "sheldon"
    rk.create_collection(CollectionId="users")
    attest(server, "users")
    ids = {}
    for name, path in [("amy1", amy / "amy1.png"), ("amy2", amy / "amy2.png"), ("sheldon1", sheldon / "sheldon1.png"),
                       ("sheldon2", sheldon / "sheldon2.png")]:
        ids[name] = rk.index_faces(CollectionId="users", Image=image(path))["FaceRecords"][0]["Face"]["FaceId"]
    for user in ("amy", "sheldon"):
        valid(rk, "CreateUser", rk.create_user(CollectionId="users", UserId=user))
    assert code(error_of(rk.create_user, CollectionId="users", UserId="amy")) == "ConflictException"
    r = valid(rk, "AssociateFaces", rk.associate_faces(CollectionId="users", UserId="amy",
                                                        FaceIds=[ids["amy1"], ids["amy2"]]))
    assert {f["FaceId"] for f in r["AssociatedFaces"]} == {ids["amy1"], ids["amy2"]}
    rk.associate_faces(CollectionId="users", UserId="sheldon", FaceIds=[ids["sheldon1"]])
    # Sheldon's other face does not match Amy: refused, and still nobody's
    r = valid(rk, "AssociateFaces", rk.associate_faces(CollectionId="users", UserId="amy", FaceIds=[ids["sheldon2"]]))
    assert r["AssociatedFaces"] == []
    assert r["UnsuccessfulFaceAssociations"][0]["Reasons"] == ["LOW_MATCH_CONFIDENCE"]
    r = rk.associate_faces(CollectionId="users", UserId="amy", FaceIds=[ids["sheldon1"], str(uuid.uuid4())])
    assert sorted(x["Reasons"][0] for x in r["UnsuccessfulFaceAssociations"]) == [
        "ASSOCIATED_TO_A_DIFFERENT_USER", "FACE_NOT_FOUND"]
    assert valid(rk, "ListUsers", rk.list_users(CollectionId="users"))["Users"] == [
        {"UserId": "amy", "UserStatus": "ACTIVE"}, {"UserId": "sheldon", "UserStatus": "ACTIVE"}]
    faces = valid(rk, "ListFaces", rk.list_faces(CollectionId="users", UserId="amy"))["Faces"]
    assert {f["FaceId"] for f in faces} == {ids["amy1"], ids["amy2"]} and {f["UserId"] for f in faces} == {"amy"}
    assert rk.describe_collection(CollectionId="users")["UserCount"] == 2

    r = valid(rk, "SearchUsersByImage", rk.search_users_by_image(CollectionId="users", Image=image(amy / "amy4.png")))
    assert [m["User"]["UserId"] for m in r["UserMatches"]] == ["amy"] and r["UserMatches"][0]["Similarity"] >= 80
    r = valid(rk, "SearchUsers", rk.search_users(CollectionId="users", FaceId=ids["sheldon2"]))
    assert [m["User"]["UserId"] for m in r["UserMatches"]] == ["sheldon"] and r["SearchedFace"]["FaceId"]
    r = valid(rk, "SearchUsers", rk.search_users(CollectionId="users", UserId="amy", UserMatchThreshold=0))
    assert "amy" not in [m["User"]["UserId"] for m in r["UserMatches"]] and r["SearchedUser"] == {"UserId": "amy"}

    # a face of a user is not deleted by DeleteFaces (Rekognition's rule); disassociated, it is
    r = valid(rk, "DeleteFaces", rk.delete_faces(CollectionId="users", FaceIds=[ids["amy2"]]))
    assert "DeletedFaces" not in r
    assert r["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["ASSOCIATED_TO_AN_EXISTING_USER"]
    r = valid(rk, "DisassociateFaces", rk.disassociate_faces(CollectionId="users", UserId="amy",
                                                              FaceIds=[ids["amy2"]]))
    assert r["DisassociatedFaces"] == [{"FaceId": ids["amy2"]}]
    before = last_seq(server)
    r = valid(rk, "DeleteFaces", rk.delete_faces(CollectionId="users", FaceIds=[ids["amy2"], str(uuid.uuid4())]))
    assert r["DeletedFaces"] == [ids["amy2"]] and r["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["FACE_NOT_FOUND"]
    erase = [x for x in records(server, before) if x["operation"] == "erase"]
    assert len(erase) == 1 and erase[0]["outcome"] == "ok" and erase[0]["decision"] == "erased 1 faces"
    assert code(error_of(rk.search_faces, CollectionId="users", FaceId=ids["amy2"])) == "ResourceNotFoundException"

    # DeleteUser erases the user's faces with it (the native erasure: receipt and audit record)
    before = last_seq(server)
    valid(rk, "DeleteUser", rk.delete_user(CollectionId="users", UserId="amy"))
    erase = [x for x in records(server, before) if x["operation"] == "erase"]
    assert erase and erase[0]["subject_ids"] == ["amy"] and erase[0]["decision"] == "erased 1 faces"
    left = {f["FaceId"] for f in rk.list_faces(CollectionId="users")["Faces"]}
    assert ids["amy1"] not in left and ids["sheldon1"] in left
    r = rk.search_faces_by_image(CollectionId="users", Image=image(amy / "amy1.png"), FaceMatchThreshold=0)
    assert not {m["Face"]["FaceId"] for m in r["FaceMatches"]} & {ids["amy1"], ids["amy2"]}

    # DeleteCollection: the native erasure of everything in it
    before = last_seq(server)
    assert valid(rk, "DeleteCollection", rk.delete_collection(CollectionId="users"))["StatusCode"] == 200
    (deleted,) = [x for x in records(server, before) if x["operation"] == "collection.delete"]
    assert deleted["outcome"] == "ok" and deleted["decision"] == "erased 2 faces"
    assert code(error_of(rk.list_faces, CollectionId="users")) == "ResourceNotFoundException"


def test_index_many_faces_detect_and_compare(rk, server, people):
    group = people / "bbt" / "bbt1.jpg"
    r = valid(rk, "DetectFaces", rk.detect_faces(Image=image(group), Attributes=["DEFAULT"]))
    faces = r["FaceDetails"]
    assert len(faces) >= 3
    for f in faces:
        assert in_unit(f["BoundingBox"]) and 0 < f["Confidence"] <= 100
        points = {p["Type"]: p for p in f["Landmarks"]}
        assert set(points) == {"eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight"}
        assert points["eyeLeft"]["X"] < points["eyeRight"]["X"]
        assert 0 <= f["Quality"]["Brightness"] <= 100 and 0 <= f["Quality"]["Sharpness"] <= 100

    rk.create_collection(CollectionId="groups")
    attest(server, "groups")
    r = valid(rk, "IndexFaces", rk.index_faces(CollectionId="groups", Image=image(group), MaxFaces=2))
    assert len(r["FaceRecords"]) == 2
    assert len({x["Face"]["ImageId"] for x in r["FaceRecords"]}) == 1  # one image, one ImageId
    reasons = {reason for u in r["UnindexedFaces"] for reason in u["Reasons"]}
    assert "EXCEEDS_MAX_FACES" in reasons and len(r["FaceRecords"]) + len(r["UnindexedFaces"]) == len(faces)
    def area(detail):
        return detail["BoundingBox"]["Width"] * detail["BoundingBox"]["Height"]

    assert min(area(x["FaceDetail"]) for x in r["FaceRecords"]) >= max(
        area(u["FaceDetail"]) for u in r["UnindexedFaces"] if "EXCEEDS_MAX_FACES" in u["Reasons"])  # largest first

    amy = people / "bbt" / "amy"
    r = valid(rk, "CompareFaces", rk.compare_faces(SourceImage=image(amy / "amy1.png"),
                                                    TargetImage=image(amy / "amy3.png")))
    assert len(r["FaceMatches"]) == 1 and r["FaceMatches"][0]["Similarity"] >= 80 and r["UnmatchedFaces"] == []
    r = valid(rk, "CompareFaces", rk.compare_faces(SourceImage=image(amy / "amy1.png"),
                                                    TargetImage=image(people / "bbt" / "sheldon" / "sheldon1.png")))
    assert r["FaceMatches"] == [] and len(r["UnmatchedFaces"]) == 1
    r = valid(rk, "CompareFaces", rk.compare_faces(SourceImage=image(amy / "amy1.png"), TargetImage=image(group),
                                                    SimilarityThreshold=0))
    assert len(r["FaceMatches"]) == len(faces) and r["UnmatchedFaces"] == []


@pytest.mark.slow  # the images of 1,200 LFW pairs (folds 1-2; embedded once per run, shared through the cache)
def test_similarity_means_the_stated_rates_on_real_pairs(server, settings, data_dir):
    """80 and 99 stand for false-match rates of 1e-3 and 1e-6 per comparison: on LFW's pairs of folds 1-2,
    genuine pairs score 80 or more, and impostors at 80 or more are as rare as 1e-3 says."""
    from faceledger.evaluation.batch import embed_files
    from faceledger.evaluation.lfw import pair_scores, read_pairs
    from faceledger.pipeline.profiles import PROFILES

    fl = server["fl"]
    pairs = read_pairs(data_dir / "lfw" / "pairs.txt").select([0, 1])
    components = PROFILES["fast"].components
    scores = pair_scores(embed_files(data_dir / "lfw", pairs.images, components, settings), pairs, components)
    values = np.array([similarity.percent(fl.calibration.fmr_detail(float(s))[1]) for s in scores])
    genuine, impostor = values[pairs.same], values[~pairs.same]
    assert similarity.percent(1e-3) == pytest.approx(80) and similarity.percent(1e-6) == pytest.approx(99)
    assert (genuine >= 80).mean() > 0.9, np.percentile(genuine, [1, 5, 50])
    assert (impostor >= 80).sum() <= 2 and (impostor >= 99).sum() == 0
    assert np.all(np.diff(values[np.argsort(scores)]) >= -1e-9)  # monotone in the score


def test_refusals_are_typed_audited_and_change_nothing(rk, server, people, tmp_path):
    fl = server["fl"]
    amy1 = people / "bbt" / "amy" / "amy1.png"
    rk.create_collection(CollectionId="guarded")
    attest(server, "guarded")
    rk.index_faces(CollectionId="guarded", Image=image(amy1))
    before = last_seq(server)

    cases = [
        (lambda: rk.describe_collection(CollectionId="no-such"), "ResourceNotFoundException", "NOT_FOUND"),
        (lambda: rk.create_collection(CollectionId="guarded"), "ResourceAlreadyExistsException", "ALREADY_EXISTS"),
        (lambda: rk.create_collection(CollectionId="bad id!"), "InvalidParameterException", "INVALID_ARGUMENT"),
        (lambda: rk.search_faces(CollectionId="guarded", FaceId="not-a-uuid"), "InvalidParameterException",
         "INVALID_ARGUMENT"),
        (lambda: rk.index_faces(CollectionId="guarded", Image={"Bytes": b"\xff" * (5 * 1024 * 1024 + 1)}),
         "ImageTooLargeException", "INVALID_ARGUMENT"),
        (lambda: rk.index_faces(CollectionId="guarded", Image={"Bytes": b"this is not an image"}),
         "InvalidImageFormatException", "INVALID_IMAGE"),
        (lambda: rk.index_faces(CollectionId="guarded", Image={"S3Object": {"Bucket": "photos", "Name": "amy.png"}}),
         "InvalidS3ObjectException", "INVALID_ARGUMENT"),
        (lambda: rk.detect_faces(Image=image(amy1), Attributes=["ALL"]), "InvalidParameterException",
         "INVALID_ARGUMENT"),
        (lambda: rk.index_faces(CollectionId="guarded", Image=image(amy1), DetectionAttributes=["AGE_RANGE", "GENDER"]),
         "InvalidParameterException", "INVALID_ARGUMENT"),
    ]
    for call, aws_type, outcome in cases:
        e = error_of(call)
        assert code(e) == aws_type, e.response
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        last = records(server)[-1]
        assert last["outcome"] == outcome and last["key_id"] == server["akid"], last
    message = error_of(rk.detect_faces, Image=image(amy1), Attributes=["AGE_RANGE", "EMOTIONS"]).response["Error"]
    assert "AGE_RANGE" in message["Message"] and "EMOTIONS" in message["Message"]
    assert all(r["outcome"] != "ok" for r in records(server, before))
    assert rk.describe_collection(CollectionId="guarded")["FaceCount"] == 1
    assert "bad id!" not in [c.name for c in fl.list_collections(Actor.local("acme"))]

    # a key without the scope: AccessDenied, audited with the key
    secret, info = fl.create_key(Actor.local(), "acme", ["detect"], "door camera", aws=True)
    limited = client(server, akid=info["key_id"], secret=secret)
    assert code(error_of(limited.index_faces, CollectionId="guarded", Image=image(amy1))) == "AccessDeniedException"
    assert records(server)[-1]["outcome"] == "FORBIDDEN" and records(server)[-1]["key_id"] == info["key_id"]

    # authentication: wrong secret, unknown key, a clock 10 minutes off, a revoked key
    auth_before = last_seq(server)
    wrong = client(server, secret="x" * 40)
    assert code(error_of(wrong.list_collections)) == "InvalidSignatureException"
    unknown = client(server, akid="FLAKUNKNOWNKEY000000")
    assert code(error_of(unknown.list_collections)) == "UnrecognizedClientException"
    skewed = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", return_value=skewed):
        e = error_of(rk.list_collections)
    assert code(e) == "InvalidSignatureException" and "expired" in e.response["Error"]["Message"]
    fl.revoke_key(Actor.local(), info["key_id"])
    assert code(error_of(limited.detect_faces, Image=image(amy1))) == "UnrecognizedClientException"
    # the first refusal of an address is recorded at once, the next ones of its minute counted into one record
    anyio.run(lambda: record_pending_refusals(server["app"], everything=True))
    refused = [r for r in records(server, auth_before) if r["outcome"] == "UNAUTHORIZED"]
    counts = [1 if r["decision"] is None else int(r["decision"].split()[0]) for r in refused]
    assert sum(counts) == 4 and all(r["key_id"] is None and r["client"] == "127.0.0.1" for r in refused)

    # the rate limit: ProvisionedThroughputExceeded, which boto3 retries (here 3 times), each refusal audited
    saved = fl.rate
    frozen = time.time()  # one clock minute for the whole check: a minute turning mid-test would reset the window
    fl.rate = RateLimiter(1, fl.gallery.store.count_use, clock=lambda: frozen)
    try:
        patient = client(server, retries=3)
        rate_before = last_seq(server)
        try:
            patient.search_faces_by_image(CollectionId="guarded", Image=image(amy1))
        except ClientError:
            pass  # the key's first search of this minute passes (unless an earlier test used it up)
        e = error_of(patient.search_faces_by_image, CollectionId="guarded", Image=image(amy1))
        assert code(e) == "ProvisionedThroughputExceededException"
        assert e.response["ResponseMetadata"]["RetryAttempts"] == 3
        limited_records = [r for r in records(server, rate_before) if r["outcome"] == "RATE_LIMITED"]
        assert len(limited_records) >= 4 and {r["operation"] for r in limited_records} == {"identify"}
    finally:
        fl.rate = saved


def test_a_signed_request_is_checked_whole(server):
    """The server checks the signature over method, path, headers and body: a body changed after signing is
    refused (so a captured request cannot be altered)."""
    import hashlib

    import httpx
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = '{"CollectionId": "tampered"}'
    req = AWSRequest(method="POST", url=server["url"] + "/", data=body,
                     headers={"Content-Type": "application/x-amz-json-1.1",
                              "X-Amz-Target": "RekognitionService.CreateCollection"})
    SigV4Auth(Credentials(server["akid"], server["secret"]), "rekognition", "eu-west-1").add_auth(req)
    headers = dict(req.headers.items())
    changed = httpx.post(server["url"] + "/", content=body.replace("tampered", "tampered2"), headers=headers)
    assert changed.status_code == 400 and changed.json()["__type"] == "InvalidSignatureException"
    ok = httpx.post(server["url"] + "/", content=body, headers=headers)
    assert ok.status_code == 200 and ok.json()["StatusCode"] == 200
    unsigned = httpx.post(server["url"] + "/", content=body, headers={"X-Amz-Target": headers["X-Amz-Target"]})
    assert unsigned.json()["__type"] == "MissingAuthenticationTokenException"

    # a claimed payload hash is checked against the body received, never trusted
    forged = {**headers, "X-Amz-Content-SHA256": hashlib.sha256(body.encode()).hexdigest()}
    r = httpx.post(server["url"] + "/", content=body.replace("tampered", "tampered3"), headers=forged)
    assert r.json()["__type"] == "InvalidSignatureException"
    # the operation is part of what is signed: another X-Amz-Target in front of the signed one is refused
    doubled = [("X-Amz-Target", "RekognitionService.DeleteCollection"), *headers.items()]
    r = httpx.post(server["url"] + "/", content=body, headers=doubled)
    assert r.json()["__type"] == "InvalidSignatureException"
    # and a signature that does not cover it is refused
    bare = AWSRequest(method="POST", url=server["url"] + "/", data=body,
                      headers={"Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(server["akid"], server["secret"]), "rekognition", "eu-west-1").add_auth(bare)
    r = httpx.post(server["url"] + "/", content=body,
                   headers={**dict(bare.headers.items()), "X-Amz-Target": "RekognitionService.DeleteCollection"})
    assert r.json()["__type"] == "InvalidSignatureException" and "x-amz-target" in r.json()["Message"]
    assert "tampered" in [c.name for c in server["fl"].list_collections(Actor.local("acme"))]


def test_the_command_line_issues_aws_keys_and_attests_collections(settings, engine, people, tmp_path):
    """`faceledger keys create --aws` and `faceledger collections attest`, then boto3 with those credentials."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "FACELEDGER_HOME": str(tmp_path)}

    def run(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "faceledger.cli", *args], capture_output=True, text=True,
                             env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    run("collections", "create", "staff", "--tenant", "acme")
    attested = json.loads(run("collections", "attest", "staff", "--tenant", "acme", "--basis", "contract",
                              "--reference", "employment contracts, clause 9"))
    assert attested["consent_attestation"]["basis"] == "contract"
    printed = run("keys", "create", "--aws", "--tenant", "acme", "--scopes", "enroll,identify", "--purpose", "door")
    key = json.loads(printed[printed.index("{"):printed.rindex("}") + 1])
    assert key["kind"] == "aws" and len(key["aws_access_key_id"]) == 20 and len(key["aws_secret_access_key"]) == 40
    assert key["aws_secret_access_key"] not in (tmp_path / "faceledger.db").read_bytes().decode("latin-1")

    fl = Faceledger(settings.model_copy(update={"home": tmp_path}), engine)
    with served(create_app(faceledger=fl)) as url:
        rk = boto3.client("rekognition", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id=key["aws_access_key_id"],
                          aws_secret_access_key=key["aws_secret_access_key"])
        r = rk.index_faces(CollectionId="staff", Image=image(people / "bbt" / "amy" / "amy1.png"))
        assert len(r["FaceRecords"]) == 1
    subject = fl.list_subjects(Actor.local("acme"), "staff")[0]
    assert subject.consent["basis"] == "contract" and subject.consent["reference"] == "employment contracts, clause 9"


def test_a_face_that_changed_owner_meanwhile_is_neither_moved_nor_erased(rk, server, people):
    """Face-level writes check, in their own transaction, that each face still belongs to the subject it was read
    with: a face associated (or erased) by another call in between makes the write refuse, changing nothing."""
    from faceledger.errors import AlreadyExists

    fl = server["fl"]
    rk.create_collection(CollectionId="races")
    attest(server, "races")
    face = rk.index_faces(CollectionId="races", Image=image(people / "bbt" / "amy" / "amy1.png"))["FaceRecords"][0]
    c = fl.gallery.collection("races", "acme")
    row = fl.gallery.store.faces_by_uuid(c.id, [face["Face"]["FaceId"]])[face["Face"]["FaceId"]]
    fid = row.face.face_id
    with pytest.raises(AlreadyExists):  # read as "amy"'s, but it is still a face of no person
        fl.gallery.store.delete_faces(c, [fid], owners={fid: "amy"})
    with pytest.raises(AlreadyExists):
        fl.gallery.store.move_faces(c, {fid: "amy"}, owners={fid: "someone-else"})
    assert fl.gallery.store.faces_by_uuid(c.id, [row.face.uuid])[row.face.uuid].subject_id == row.subject_id
    assert fl.gallery.index_contains("races", [fid], tenant="acme")
