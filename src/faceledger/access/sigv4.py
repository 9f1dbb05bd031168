"""AWS Signature Version 4, checked on the server side: the canonical request rebuilt from what arrived,
signed again with the key's secret, compared in constant time.

This is the scheme every AWS SDK signs with (https://docs.aws.amazon.com/IAM/latest/UserGuide/
create-signed-request.html): a canonical request (method, path, sorted query, the signed headers,
the payload's SHA-256), a string to sign naming the credential scope (date/region/service), and an
HMAC chain from the secret through date, region and service. A request whose time is more than
five minutes off the server's is refused, as AWS does, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from faceledger.errors import Unauthorized

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = dt.timedelta(minutes=5)
_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class SignedRequest:
    method: str
    path: str  # as sent (percent-encoded)
    query: str  # as sent
    headers: Mapping[str, str]  # lower-case names
    body: bytes


def _refused(message: str, reason: str, **details) -> Unauthorized:
    return Unauthorized(message, reason=reason, **details)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def canonical_request(req: SignedRequest, signed_headers: list[str]) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~"))
                   for k, v in parse_qsl(req.query, keep_blank_values=True))
    headers = "".join(f"{h}:{_SPACES.sub(' ', req.headers.get(h, '').strip())}\n" for h in signed_headers)
    payload = hashlib.sha256(req.body).hexdigest()  # the body received, whatever a header claims
    return "\n".join([req.method.upper(), req.path or "/", "&".join(f"{k}={v}" for k, v in pairs), headers,
                      ";".join(signed_headers), payload])


def signature(secret: str, amz_date: str, scope: str, canonical: str) -> str:
    date, region, service, _ = scope.split("/")
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), "aws4_request")
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def verify(req: SignedRequest, service: str, secret_of: Callable[[str], tuple[object, str]], *,
           must_sign: tuple[str, ...] = ("host", "x-amz-date"), now: dt.datetime | None = None) -> object:
    """Check a SigV4-signed request for ``service``; returns what ``secret_of(access key id)`` gave with the
    secret (the key's principal). ``must_sign``: headers the signature must cover (e.g. the operation's). The
    payload hash is always computed from the body received: an ``X-Amz-Content-SHA256`` header must equal it
    (``UNSIGNED-PAYLOAD`` is refused). Raises Unauthorized with ``reason``: missing, malformed, expired, unknown,
    revoked or signature."""
    auth = req.headers.get("authorization")
    if not auth:
        raise _refused("the request is not signed (AWS Signature Version 4 expected)", "missing")
    m = _AUTH.fullmatch(auth.strip())
    if m is None:
        raise _refused("the Authorization header is not an AWS4-HMAC-SHA256 signature", "malformed")
    credential, signed, given = m.groups()
    parts = credential.split("/")
    if len(parts) != 5 or parts[3] != service or parts[4] != "aws4_request":
        raise _refused(f"the credential scope must be <key>/<date>/<region>/{service}/aws4_request", "malformed")
    access_key_id, scope = parts[0], "/".join(parts[1:])
    signed_headers = signed.split(";")
    unsigned = [h for h in must_sign if h not in signed_headers]
    if unsigned or signed_headers != sorted(signed_headers):
        raise _refused(f"the signature must cover the headers {', '.join(must_sign)}, in order", "malformed",
                       unsigned=unsigned)
    claimed = req.headers.get("x-amz-content-sha256")
    if claimed is not None and claimed != hashlib.sha256(req.body).hexdigest():
        raise _refused("X-Amz-Content-SHA256 is not the SHA-256 of the body (unsigned payloads are refused)",
                       "signature")
    amz_date = req.headers.get("x-amz-date", "")
    try:
        at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise _refused("X-Amz-Date is not an ISO 8601 basic time (YYYYMMDDTHHMMSSZ)", "malformed") from None
    if parts[1] != amz_date[:8]:
        raise _refused("the credential scope's date is not the request's date", "malformed")
    now = now or dt.datetime.now(dt.timezone.utc)
    if abs(now - at) > MAX_SKEW:
        raise _refused(f"Signature expired: {amz_date} is more than 5 minutes from the server's time "
                       f"{now.strftime('%Y%m%dT%H%M%SZ')}", "expired")
    principal, secret = secret_of(access_key_id)
    expected = signature(secret, amz_date, scope, canonical_request(req, signed_headers))
    if not hmac.compare_digest(expected, given):
        raise _refused("The request signature we calculated does not match the signature you provided. Check "
                       "your AWS Secret Access Key and signing method.", "signature")
    return principal
