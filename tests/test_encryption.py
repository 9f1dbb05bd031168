"""Templates at rest under AES-GCM: no clear template bytes in the database, search still works,
a wrong or missing key stops start-up, and keys rotate."""

from __future__ import annotations

import base64
import os

import numpy as np
import pytest

from faceledger.gallery.crypto import TemplateKeyError
from faceledger.gallery.records import Consent
from faceledger.service import Actor, Faceledger

KEY = base64.b64encode(os.urandom(32)).decode()
ME = Actor.local()
NEW_KEY = base64.b64encode(os.urandom(32)).decode()


def stored_bytes(home) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file() and "cache" not in p.parts)


def test_encrypted_gallery(settings, engine, people, tmp_path):
    home = tmp_path / "home"
    secure = settings.model_copy(update={"home": home, "template_key": KEY})
    g = Faceledger(secure, engine)
    g.create_collection(ME, "vault")
    for name in ("amy", "howard", "penny"):
        g.enroll(ME, "vault", name, [people / "bbt" / name / f"{name}{i}.png" for i in (1, 2)],
                 consent=Consent("explicit-consent"))
    templates = [engine.analyze(people / "bbt" / n / f"{n}{i}.png").templates[0]
                 for n in ("amy", "howard", "penny") for i in (1, 2)]
    assert g.identify(ME, "vault", people / "bbt" / "penny" / "penny3.png").faces[0].subject_id == "penny"
    g.close()
    raw = stored_bytes(home)  # database, WAL, persisted index
    for t in templates:
        clear = np.asarray(t, np.float32).tobytes()
        assert clear not in raw and clear[:32] not in raw and clear[-32:] not in raw

    again = Faceledger(secure, engine)  # restart: the encrypted persisted index loads
    assert again.gallery.startup()["default/vault"]["source"] == "loaded"
    assert again.identify(ME, "vault", people / "bbt" / "amy" / "amy3.png").faces[0].subject_id == "amy"
    again.close()

    for wrong in (base64.b64encode(os.urandom(32)).decode(), None):
        with pytest.raises(TemplateKeyError):
            Faceledger(settings.model_copy(update={"home": home, "template_key": wrong}), engine)

    # rotation: re-encrypt under a new key; the old key then stops working
    rotating = Faceledger(secure, engine)
    assert rotating.rekey(ME, base64.b64decode(NEW_KEY)) == 6
    rotating.close()
    with pytest.raises(TemplateKeyError):
        Faceledger(secure, engine)
    rotated = Faceledger(settings.model_copy(update={"home": home, "template_key": NEW_KEY}), engine)
    assert rotated.identify(ME, "vault", people / "bbt" / "howard" / "howard3.png").faces[0].subject_id == "howard"
    rotated.close()


def test_key_set_on_a_clear_database_is_refused(settings, engine, people, tmp_path):
    home = tmp_path / "clear"
    g = Faceledger(settings.model_copy(update={"home": home}), engine)
    g.create_collection(ME, "c", require_consent=False)
    g.enroll(ME, "c", "amy", [people / "bbt" / "amy" / "amy1.png"])
    g.close()
    with pytest.raises(TemplateKeyError, match="rekey"):
        Faceledger(settings.model_copy(update={"home": home, "template_key": KEY}), engine)
    with pytest.raises(TemplateKeyError):
        Faceledger(settings.model_copy(update={"home": home, "template_key": "short"}), engine)
