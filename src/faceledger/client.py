"""A small Python client for the faceledger HTTP API: one method per route, typed errors.

    from faceledger.client import Client, ManyFacesError
    fl = Client("http://127.0.0.1:8080", api_key="fl_...")
    fl.create_collection("staff")
    fl.enroll("staff", "alice", ["alice1.jpg"], consent_basis="explicit-consent")
    fl.identify("staff", "door.jpg")["faces"][0]["decision"]
    try:
        fl.compare("group.jpg", "alice2.jpg")
    except ManyFacesError as exc:        # the group photo has several faces: say which one
        fl.compare("group.jpg", "alice2.jpg", face_a=0)

Every error answer raises an ``ApiError`` subclass chosen by the error's code (``ERRORS``), carrying
``status``, ``code``, ``message`` and ``details``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx

ImageArg = str | Path | bytes
Json = dict[str, Any]


# ---------------------------------------------------------------- errors
class ApiError(Exception):
    """An error answer of the API: HTTP status and the JSON error body's code, message, details."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or {}


class InvalidRequestError(ApiError):
    """INVALID_REQUEST, INVALID_ARGUMENT: the request does not match the API schema or a rule of the operation."""


class InvalidImageError(ApiError):
    """INVALID_IMAGE, EMPTY_IMAGE, TRUNCATED_IMAGE: not an image the service can read."""


class NoFaceError(ApiError):
    """NO_FACE: no face was found in the image."""


class ManyFacesError(ApiError):
    """MANY_FACES: the image has several faces and the operation is about one. Say which: ``face=`` (enrol,
    verify), ``face_a=`` / ``face_b=`` (compare), an index into the faces ordered largest first."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None) -> None:
        super().__init__(status, code, message, details)
        self.faces: int | None = self.details.get("faces")
        self.boxes: list[list[float]] = self.details.get("boxes", [])

    def __str__(self) -> str:
        return f"{super().__str__()} (Python client: choose with face= / face_a= / face_b=)"


class EnrollmentRefusedError(ApiError):
    """ENROLLMENT_REFUSED: no face passed the quality limits; ``reasons`` names them."""

    @property
    def reasons(self) -> list[str]:
        return list(self.details.get("reasons", []))


class ConsentRequiredError(ApiError):
    """CONSENT_REQUIRED: the collection requires a consent record (``consent_basis=``)."""


class PayloadTooLargeError(ApiError):
    """PAYLOAD_TOO_LARGE, IMAGE_TOO_LARGE (413): the body, an image or its pixel count is over its limit."""


class UnsupportedMediaTypeError(ApiError):
    """UNSUPPORTED_MEDIA_TYPE (415)."""


class UnauthorizedError(ApiError):
    """UNAUTHORIZED (401): no key, or an unknown or revoked one."""


class ForbiddenError(ApiError):
    """FORBIDDEN (403): the key lacks the scope (``details["scope"]``)."""


class NotFoundError(ApiError):
    """NOT_FOUND (404): no such collection, subject or face in this key's tenant."""


class AlreadyExistsError(ApiError):
    """ALREADY_EXISTS (409)."""


class NotCalibratedError(ApiError):
    """NOT_CALIBRATED (409): the running model has no calibration for the asked false-match rate."""


class RateLimitedError(ApiError):
    """RATE_LIMITED (429); ``retry_after``: seconds to wait (the Retry-After header), when the service says."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(status, code, message, details)
        self.retry_after = retry_after if retry_after is not None else self.details.get("retry_after_s")


class OverloadedError(ApiError):
    """OVERLOADED (503): every inference worker busy and the queue full; try again shortly."""


class ServerError(ApiError):
    """Another failure of the service (5xx): storage full or unavailable, a model file, an internal error."""


ERRORS: dict[str, type[ApiError]] = {
    "INVALID_REQUEST": InvalidRequestError, "INVALID_ARGUMENT": InvalidRequestError,
    "INVALID_IMAGE": InvalidImageError, "EMPTY_IMAGE": InvalidImageError, "TRUNCATED_IMAGE": InvalidImageError,
    "NO_FACE": NoFaceError, "MANY_FACES": ManyFacesError, "ENROLLMENT_REFUSED": EnrollmentRefusedError,
    "CONSENT_REQUIRED": ConsentRequiredError,
    "PAYLOAD_TOO_LARGE": PayloadTooLargeError, "IMAGE_TOO_LARGE": PayloadTooLargeError,
    "UNSUPPORTED_MEDIA_TYPE": UnsupportedMediaTypeError,
    "UNAUTHORIZED": UnauthorizedError, "FORBIDDEN": ForbiddenError, "NOT_FOUND": NotFoundError,
    "ALREADY_EXISTS": AlreadyExistsError, "NOT_CALIBRATED": NotCalibratedError,
    "RATE_LIMITED": RateLimitedError, "OVERLOADED": OverloadedError,
}


def error_from(response: httpx.Response) -> ApiError:
    """The typed error of an error answer (``ERRORS`` by code; ``ServerError`` for another 5xx, else ``ApiError``)."""
    try:
        error = response.json()["error"]
        code, message, details = error.get("code", "HTTP_ERROR"), error.get("message", ""), error.get("details")
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message, details = "HTTP_ERROR", response.text[:200], None
    cls = ERRORS.get(code, ServerError if response.status_code >= 500 else ApiError)
    if cls is RateLimitedError:
        try:
            retry_after = float(response.headers["retry-after"])
        except (KeyError, ValueError):
            retry_after = None
        return RateLimitedError(response.status_code, code, message, details, retry_after=retry_after)
    return cls(response.status_code, code, message, details)


def _content(image: ImageArg) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _seg(value: str | int) -> str:
    """One path segment, quoted (a subject id may hold spaces, '#', '?')."""
    return quote(str(value), safe="")


def _form(**fields: Any) -> dict[str, str]:
    """Form fields of a multipart body: None left out (never sent as null)."""
    return {k: str(v) for k, v in fields.items() if v is not None}


# ---------------------------------------------------------------- the client
class Client:
    """The HTTP API from Python. ``api_key``: sent as ``Authorization: Bearer``; ``transport``: another httpx
    transport (tests drive the app in-process with it)."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise error_from(response)
        return response

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    # ------------------------------------------------------------ service
    def health(self) -> Json:
        """``GET /v1/health``: status, version, profile, model_id (no key needed)."""
        return self._call("GET", "/v1/health")

    def ready(self) -> Json:
        """``GET /v1/ready``: models loaded and the database writable (raises ServerError / OverloadedError
        otherwise)."""
        return self._call("GET", "/v1/ready")

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text (an admin key, or the metrics token as the key)."""
        return self._send("GET", "/metrics").text

    # ------------------------------------------------------------ faces
    def detect(self, image: ImageArg, *, reference: str | None = None) -> Json:
        """``POST /v1/detect``: boxes, landmarks, confidence and quality of every face."""
        return self._call("POST", "/v1/detect", files={"image": _content(image)}, data=_form(reference=reference))

    def compare(self, image_a: ImageArg, image_b: ImageArg, *, fmr: float = 1e-4, face_a: int | None = None,
                face_b: int | None = None, reference: str | None = None) -> Json:
        """``POST /v1/compare``: 1:1 between the faces of two images. ``face_a`` / ``face_b`` say which face of an
        image with several (0 = largest)."""
        return self._call("POST", "/v1/compare", files={"image_a": _content(image_a), "image_b": _content(image_b)},
                          data=_form(fmr=fmr, face_a=face_a, face_b=face_b, reference=reference))

    # ------------------------------------------------------------ collections
    def create_collection(self, name: str, *, target_fpir: float | None = None, target_fmr: float | None = None,
                          require_consent: bool | None = None, store_crops: bool | None = None,
                          retention_days: int | None = None) -> Json:
        """``POST /v1/collections`` (admin): ``target_fpir`` for 1:N searches, ``target_fmr`` for 1:1 claims."""
        options = {"target_fpir": target_fpir, "target_fmr": target_fmr, "require_consent": require_consent,
                   "store_crops": store_crops,
                   "retention_days": retention_days}
        return self._call("POST", "/v1/collections",
                          json={"name": name, **{k: v for k, v in options.items() if v is not None}})

    def list_collections(self) -> list[Json]:
        """``GET /v1/collections``."""
        return self._call("GET", "/v1/collections")

    def get_collection(self, name: str) -> Json:
        """``GET /v1/collections/{collection}``."""
        return self._call("GET", f"/v1/collections/{_seg(name)}")

    def update_collection(self, name: str, *, target_fpir: float | None = None,
                          target_fmr: float | None = None) -> Json:
        """``PATCH /v1/collections/{collection}`` (admin): change the 1:N target FPIR and/or the 1:1 target FMR."""
        options = {"target_fpir": target_fpir, "target_fmr": target_fmr}
        return self._call("PATCH", f"/v1/collections/{_seg(name)}",
                          json={k: v for k, v in options.items() if v is not None})

    def delete_collection(self, name: str) -> Json:
        """``DELETE /v1/collections/{collection}`` (admin): erases every subject; returns the receipt."""
        return self._call("DELETE", f"/v1/collections/{_seg(name)}")

    # ------------------------------------------------------------ subjects
    def create_subject(self, collection: str, subject_id: str, *, display_name: str | None = None,
                       metadata: dict[str, Any] | None = None, consent: dict[str, Any] | None = None) -> Json:
        """``POST /v1/collections/{collection}/subjects``: a subject with metadata and a consent record
        (``{"basis": ..., "reference": ..., "expires_at": ...}``); faces are enrolled separately."""
        body = {"subject_id": subject_id, "display_name": display_name, "metadata": metadata, "consent": consent}
        return self._call("POST", f"/v1/collections/{_seg(collection)}/subjects",
                          json={k: v for k, v in body.items() if v is not None})

    def list_subjects(self, collection: str, *, limit: int = 100, offset: int = 0) -> list[Json]:
        """``GET /v1/collections/{collection}/subjects``: summaries with ``face_count`` (no faces)."""
        return self._call("GET", f"/v1/collections/{_seg(collection)}/subjects",
                          params={"limit": limit, "offset": offset})

    def get_subject(self, collection: str, subject_id: str) -> Json:
        """``GET /v1/collections/{collection}/subjects/{subject_id}``: the subject with its faces and face_count."""
        return self._call("GET", f"/v1/collections/{_seg(collection)}/subjects/{_seg(subject_id)}")

    def delete_subject(self, collection: str, subject_id: str) -> Json:
        """``DELETE .../subjects/{subject_id}``: erasure; returns the receipt."""
        return self._call("DELETE", f"/v1/collections/{_seg(collection)}/subjects/{_seg(subject_id)}")

    def enroll(self, collection: str, subject_id: str, images: Sequence[ImageArg], *, face: int | None = None,
               display_name: str | None = None, consent_basis: str | None = None,
               consent_reference: str | None = None, consent_expires_at: str | None = None,
               reference: str | None = None) -> Json:
        """``POST .../subjects/{subject_id}/faces``: one face per image (``face`` says which of several, 0 =
        largest); the subject is created if new. All or nothing."""
        data = _form(face=face, display_name=display_name, consent_basis=consent_basis,
                     consent_reference=consent_reference, consent_expires_at=consent_expires_at, reference=reference)
        files = [("images", _content(i)) for i in images]
        return self._call("POST", f"/v1/collections/{_seg(collection)}/subjects/{_seg(subject_id)}/faces",
                          files=files, data=data)

    def list_faces(self, collection: str, subject_id: str) -> list[Json]:
        """``GET .../subjects/{subject_id}/faces``: the subject's enrolled faces (never templates)."""
        return self._call("GET", f"/v1/collections/{_seg(collection)}/subjects/{_seg(subject_id)}/faces")

    def delete_face(self, collection: str, subject_id: str, face_id: int) -> Json:
        """``DELETE .../faces/{face_id}``: erase one face; returns the receipt."""
        return self._call("DELETE",
                          f"/v1/collections/{_seg(collection)}/subjects/{_seg(subject_id)}/faces/{int(face_id)}")

    # ------------------------------------------------------------ search
    def identify(self, collection: str, image: ImageArg, *, top_k: int = 5, fpir: float | None = None,
                 reference: str | None = None) -> Json:
        """``POST /v1/collections/{collection}/identify``: 1:N for every face, with an open-set decision (match,
        review or unknown) at the collection's target FPIR, or ``fpir`` for this search."""
        return self._call("POST", f"/v1/collections/{_seg(collection)}/identify", files={"image": _content(image)},
                          data=_form(top_k=top_k, fpir=fpir, reference=reference))

    def verify(self, collection: str, subject_id: str, image: ImageArg, *, fmr: float | None = None,
               face: int | None = None, reference: str | None = None) -> Json:
        """``POST .../subjects/{subject_id}/verify``: 1:1 against a claimed subject (``face`` says which of
        several, 0 = largest)."""
        return self._call("POST", f"/v1/collections/{_seg(collection)}/subjects/{_seg(subject_id)}/verify",
                          files={"image": _content(image)}, data=_form(fmr=fmr, face=face, reference=reference))

    # ------------------------------------------------------------ oversight (admin)
    def query_audit(self, *, subject_id: str | None = None, key_id: str | None = None, operation: str | None = None,
                    since: str | None = None, until: str | None = None, limit: int = 1000,
                    offset: int = 0) -> list[Json]:
        """``GET /v1/audit``: this tenant's audit records, by subject, key, operation, time (ISO 8601)."""
        params = _form(subject_id=subject_id, key_id=key_id, operation=operation, since=since, until=until,
                       limit=limit, offset=offset)
        return self._call("GET", "/v1/audit", params=params)

    def verify_audit(self) -> Json:
        """``GET /v1/audit/verify``: the hash chain and its seals checked; names the first bad record."""
        return self._call("GET", "/v1/audit/verify")

    def report(self) -> Json:
        """``GET /v1/report``: the accuracy and fairness report of the running model."""
        return self._call("GET", "/v1/report")

    # ------------------------------------------------------------ cameras and video
    def create_stream(self, source: str, *, purpose: str, collection: str | None = None, mode: str = "identify",
                      fps: float = 10.0, identify_per_hour: int | None = None,
                      webhook_url: str | None = None) -> Json:
        """``POST /v1/streams`` (admin): watch a live source; the answer holds the webhook secret, shown once."""
        body = {k: v for k, v in {"source": source, "purpose": purpose, "collection": collection, "mode": mode,
                                  "fps": fps, "identify_per_hour": identify_per_hour,
                                  "webhook_url": webhook_url}.items() if v is not None}
        return self._call("POST", "/v1/streams", json=body)

    def list_streams(self) -> list[Json]:
        """``GET /v1/streams``: this tenant's streams and videos."""
        return self._call("GET", "/v1/streams")

    def get_stream(self, stream_id: str) -> Json:
        """``GET /v1/streams/{stream_id}``: a stream and its live status."""
        return self._call("GET", f"/v1/streams/{_seg(stream_id)}")

    def delete_stream(self, stream_id: str) -> None:
        """``DELETE /v1/streams/{stream_id}`` (admin): stop watching, forget its events."""
        self._send("DELETE", f"/v1/streams/{_seg(stream_id)}")

    def stream_events(self, stream_id: str, *, after: int = 0, limit: int = 100) -> Json:
        """``GET /v1/streams/{stream_id}/events``: events after the id ``after`` (``next_after`` for the next read)."""
        return self._call("GET", f"/v1/streams/{_seg(stream_id)}/events", params={"after": after, "limit": limit})

    def submit_video(self, video: str | Path | bytes, *, purpose: str, collection: str | None = None,
                     mode: str = "identify", fps: float = 5.0, webhook_url: str | None = None) -> Json:
        """``POST /v1/videos``: a video file for batch analysis (the file is the request body)."""
        name = Path(video).name if not isinstance(video, bytes) else "video.mp4"
        params = _form(purpose=purpose, collection=collection, mode=mode, fps=fps, filename=name,
                       webhook_url=webhook_url)
        return self._call("POST", "/v1/videos", params=params, content=_content(video),
                          headers={"content-type": "application/octet-stream"})

    def video_results(self, video_id: str, *, offset: int = 0, limit: int = 50) -> Json:
        """``GET /v1/videos/{video_id}``: the video's persons (tracks) with times and matches, paginated."""
        return self._call("GET", f"/v1/videos/{_seg(video_id)}", params={"offset": offset, "limit": limit})

    def webhook_deliveries(self, *, stream_id: str | None = None, state: str | None = None) -> list[Json]:
        """``GET /v1/webhooks/deliveries`` (admin): pending, delivered and dead deliveries."""
        return self._call("GET", "/v1/webhooks/deliveries", params=_form(stream_id=stream_id, state=state))

    def replay_webhooks(self, *, stream_id: str | None = None) -> Json:
        """``POST /v1/webhooks/replay`` (admin): send the dead letters again."""
        return self._call("POST", "/v1/webhooks/replay", params=_form(stream_id=stream_id))
