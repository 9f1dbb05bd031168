"""Templates at rest: AES-256-GCM under a key from the environment, so a stolen database is useless.

The database keeps a check value (a known text sealed with the key) so that a wrong or
missing key is a clear start-up error, never wrong answers. Key rotation: ``faceledger
templates rekey`` re-encrypts every template from ``FACELEDGER_TEMPLATE_KEY`` to
``FACELEDGER_NEW_TEMPLATE_KEY`` in one transaction (see the README).
"""

from __future__ import annotations

import base64
import binascii
import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from faceledger.errors import TemplateKeyError

AAD = b"faceledger-template-v1"
CHECK_TEXT = b"faceledger template key check"


def parse_key(text: str | None) -> bytes | None:
    """A 32-byte key given as base64 (or 64 hex digits)."""
    if not text:
        return None
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TemplateKeyError("the template key is neither base64 nor hex") from None
    if len(key) != 32:
        raise TemplateKeyError(f"the template key must be 32 bytes (AES-256), got {len(key)}")
    return key


class TemplateCipher:
    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self._aes = AESGCM(key) if key else None

    @property
    def enabled(self) -> bool:
        return self._aes is not None

    def seal(self, data: bytes, aad: bytes = AAD) -> bytes:
        if self._aes is None:
            return data
        nonce = os.urandom(12)
        return nonce + self._aes.encrypt(nonce, data, aad)

    def open(self, blob: bytes, aad: bytes = AAD) -> bytes:
        if self._aes is None:
            return blob
        try:
            return self._aes.decrypt(blob[:12], blob[12:], aad)
        except InvalidTag:
            raise TemplateKeyError("a template could not be decrypted: wrong FACELEDGER_TEMPLATE_KEY") from None

    def pack(self, vector: np.ndarray) -> bytes:
        return self.seal(np.asarray(vector, np.float32).tobytes())

    def unpack(self, blob: bytes) -> np.ndarray:
        return np.frombuffer(self.open(blob), np.float32)

    def check_value(self) -> str:
        return "none" if not self.enabled else base64.b64encode(self.seal(CHECK_TEXT, b"check")).decode()

    def verify_check(self, stored: str) -> None:
        """Refuse to start when the key does not match the one the database was written with."""
        if stored == "none":
            if self.enabled:
                raise TemplateKeyError("the database holds templates in the clear but a template key is set; "
                                       "encrypt them with `faceledger templates rekey`")
            return
        if not self.enabled:
            raise TemplateKeyError("the database's templates are encrypted: set FACELEDGER_TEMPLATE_KEY")
        try:
            ok = self._aes.decrypt(base64.b64decode(stored)[:12], base64.b64decode(stored)[12:], b"check") == CHECK_TEXT
        except InvalidTag:
            ok = False
        if not ok:
            raise TemplateKeyError("FACELEDGER_TEMPLATE_KEY is not the key this database was encrypted with")
