"""A small Python client for the faceledger HTTP API.

    from faceledger.client import Client
    fl = Client("http://127.0.0.1:8080", api_key="fl_...")
    fl.create_collection("staff")
    fl.enroll("staff", "alice", ["alice1.jpg"], consent_basis="explicit-consent")
    fl.identify("staff", "door.jpg")["faces"][0]["decision"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

ImageArg = str | Path | bytes


class ApiError(Exception):
    """An error answer of the API: HTTP status and the JSON error body's code, message, details."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or {}


def _content(image: ImageArg) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "HTTP_ERROR", "message": response.text[:200]}
            raise ApiError(response.status_code, error.get("code", "HTTP_ERROR"), error.get("message", ""),
                           error.get("details"))
        return response.json()

    # service
    def health(self) -> dict:
        return self._call("GET", "/v1/health")

    # faces
    def detect(self, image: ImageArg) -> dict:
        return self._call("POST", "/v1/detect", files={"image": _content(image)})

    def compare(self, image_a: ImageArg, image_b: ImageArg, *, fmr: float = 1e-4) -> dict:
        return self._call("POST", "/v1/compare", files={"image_a": _content(image_a), "image_b": _content(image_b)},
                          data={"fmr": str(fmr)})

    # collections
    def create_collection(self, name: str, **options) -> dict:
        return self._call("POST", "/v1/collections", json={"name": name, **options})

    def list_collections(self) -> list[dict]:
        return self._call("GET", "/v1/collections")

    def get_collection(self, name: str) -> dict:
        return self._call("GET", f"/v1/collections/{name}")

    def delete_collection(self, name: str) -> dict:
        return self._call("DELETE", f"/v1/collections/{name}")

    # subjects
    def create_subject(self, collection: str, subject_id: str, **fields) -> dict:
        return self._call("POST", f"/v1/collections/{collection}/subjects", json={"subject_id": subject_id, **fields})

    def list_subjects(self, collection: str, *, limit: int = 100, offset: int = 0) -> list[dict]:
        return self._call("GET", f"/v1/collections/{collection}/subjects", params={"limit": limit, "offset": offset})

    def get_subject(self, collection: str, subject_id: str) -> dict:
        return self._call("GET", f"/v1/collections/{collection}/subjects/{subject_id}")

    def delete_subject(self, collection: str, subject_id: str) -> dict:
        return self._call("DELETE", f"/v1/collections/{collection}/subjects/{subject_id}")

    def enroll(self, collection: str, subject_id: str, images: list[ImageArg], **fields) -> dict:
        data = {k: str(v) for k, v in fields.items() if v is not None}
        files = [("images", _content(i)) for i in images]
        return self._call("POST", f"/v1/collections/{collection}/subjects/{subject_id}/faces", files=files, data=data)

    def delete_face(self, collection: str, subject_id: str, face_id: int) -> dict:
        return self._call("DELETE", f"/v1/collections/{collection}/subjects/{subject_id}/faces/{face_id}")

    # search
    def identify(self, collection: str, image: ImageArg, *, top_k: int = 5, fmr: float | None = None) -> dict:
        data = {"top_k": str(top_k)} | ({"fmr": str(fmr)} if fmr else {})
        return self._call("POST", f"/v1/collections/{collection}/identify", files={"image": _content(image)},
                          data=data)

    def verify(self, collection: str, subject_id: str, image: ImageArg, *, fmr: float | None = None) -> dict:
        data = {"fmr": str(fmr)} if fmr else {}
        return self._call("POST", f"/v1/collections/{collection}/subjects/{subject_id}/verify",
                          files={"image": _content(image)}, data=data)
