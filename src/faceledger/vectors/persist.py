"""Persisted indexes are authenticated, so a tampered or corrupted file is never searched.

An index is two files: the serialized index (``collection-N.faiss``) and its metadata
(``collection-N.json``: collection id, kind, count, dim, and since format v3 the IVF layout,
which sets the share of lists a search visits). Both are bound together:

* with a template key, the index bytes are sealed with AES-GCM and the metadata is the
  associated data (a changed byte or a file of another collection fails to open);
* otherwise an HMAC-SHA256 under the deployment's integrity key (kept in the database,
  never in the index folder) covers the metadata and the index bytes;
* with neither (a store opened without an integrity key), a SHA-256 checksum catches
  corruption but not deliberate tampering.

Anything that does not check out raises ``IndexRejected`` with the reason; the store then
rebuilds the collection from the database and reports it. Nothing is deserialized before
it has been authenticated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from faceledger.errors import FaceledgerError

FORMAT = "faceledger-index-v3"
KINDS = ("flat", "ivf")
# the metadata the seal or MAC covers, by format. v3 adds the layout, so that an edited layout fails the check, and
# so that a release reading v2 only rejects a v3 file (and rebuilds it) instead of searching its lists with the
# share measured for another layout. v2 files (without a layout, or with one the MAC does not cover, written by one
# release) are still read.
BOUND = {"faceledger-index-v2": ("collection_id", "kind", "count", "dim", "encrypted"),
         FORMAT: ("collection_id", "kind", "count", "dim", "encrypted", "layout")}


class IndexRejected(Exception):
    """A persisted index that must not be used; ``reason`` says why (for the report and the log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _header(meta: dict) -> bytes:
    return json.dumps({"format": meta["format"], **{k: meta[k] for k in BOUND[meta["format"]]}},
                      sort_keys=True).encode()


def _mac(key: bytes | None, header: bytes, data: bytes) -> str:
    h = hmac.new(key, digestmod=hashlib.sha256) if key else hashlib.sha256()
    h.update(len(header).to_bytes(8, "big"))
    h.update(header)
    h.update(data)
    return h.hexdigest()


def write(path: Path, data: bytes, meta: dict, *, cipher=None, key: bytes | None = None) -> None:
    """Write the index bytes and their metadata, each atomically (temporary file, then rename)."""
    encrypted = bool(cipher is not None and cipher.enabled)
    meta = {**meta, "format": FORMAT, "encrypted": encrypted}
    header = _header(meta)
    if encrypted:
        blob, meta["auth"] = cipher.seal(data, header), "aes-gcm"
    else:
        blob, meta["auth"], meta["mac"] = data, "hmac-sha256" if key else "sha256", _mac(key, header, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_path = path.with_suffix(".json")
    tmp, meta_tmp = path.with_suffix(".faiss.tmp"), path.with_suffix(".json.tmp")
    _write_synced(tmp, blob)
    _write_synced(meta_tmp, json.dumps(meta).encode())
    os.replace(tmp, path)
    os.replace(meta_tmp, meta_path)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read(path: Path, expect: dict, *, cipher=None, key: bytes | None = None) -> tuple[bytes, dict] | None:
    """The authenticated index bytes and metadata; None when neither file exists (nothing persisted yet).

    ``expect`` holds what the caller knows the file must say (collection id, dim).
    """
    meta_path = path.with_suffix(".json")
    if not path.is_file() and not meta_path.is_file():
        return None
    if not meta_path.is_file():
        raise IndexRejected("index metadata file missing")
    if not path.is_file():
        raise IndexRejected("index file missing")
    try:
        meta = json.loads(meta_path.read_bytes())
        blob = path.read_bytes()
    except (OSError, ValueError) as e:  # ValueError: not JSON, not UTF-8
        raise IndexRejected(f"index metadata file unreadable ({type(e).__name__})") from None
    meta = _valid_meta(meta, expect, encrypted=bool(cipher is not None and cipher.enabled))
    header = _header(meta)
    if meta["encrypted"]:
        try:
            data = cipher.open(blob, header)
        except (FaceledgerError, ValueError):  # an invalid tag (TemplateKeyError) or a truncated blob
            raise IndexRejected("index file failed its integrity check (decryption)") from None
        return data, meta
    if meta.get("auth") != ("hmac-sha256" if key else "sha256"):
        raise IndexRejected(f"index file failed its integrity check (authentication '{meta.get('auth')}' "
                            f"where {'an HMAC' if key else 'a checksum'} was expected)")
    if not isinstance(meta.get("mac"), str) or not hmac.compare_digest(meta["mac"], _mac(key, header, blob)):
        raise IndexRejected("index file failed its integrity check")
    return blob, meta


def _valid_meta(meta, expect: dict, *, encrypted: bool) -> dict:
    if not isinstance(meta, dict):
        raise IndexRejected(f"index metadata is not an object ({type(meta).__name__})")
    if "format" not in meta and "kind" in meta:
        raise IndexRejected("index file of an earlier version, without authentication")
    if not isinstance(meta.get("format"), str) or meta["format"] not in BOUND:
        raise IndexRejected(f"index metadata of an unknown format ({str(meta.get('format'))[:40]})")
    if meta["format"] == FORMAT and type(meta.get("layout")) is not int:
        raise IndexRejected("index metadata without a valid 'layout'")
    for field in ("collection_id", "count", "dim"):
        if type(meta.get(field)) is not int or meta[field] < 0:
            raise IndexRejected(f"index metadata without a valid '{field}'")
    if meta.get("kind") not in KINDS:
        raise IndexRejected(f"index metadata of an unknown kind ({str(meta.get('kind'))[:40]})")
    if type(meta.get("encrypted")) is not bool:
        raise IndexRejected("index metadata without a valid 'encrypted'")
    if meta["encrypted"] != encrypted:
        raise IndexRejected("index file written under another template key setting")
    for field, value in expect.items():
        if meta[field] != value:
            raise IndexRejected(f"index metadata {field} {meta[field]} where {value} was expected")
    return meta
