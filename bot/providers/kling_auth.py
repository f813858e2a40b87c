"""Kling's API token: a JSON Web Token the client signs itself, with the standard library only.

Kling gives an account an access key and a secret key, never a bearer token. Each request carries
`Authorization: Bearer <JWT>`, the JWT being HS256 over the header `{"alg": "HS256", "typ": "JWT"}` and the
claims `iss` (the access key), `exp` (when it stops being valid) and `nbf` (from when it is valid), signed with
the secret key. Kling answers 401 with code 1003 before `nbf` and 1004 after `exp`.

One token is signed and reused until `RENEW_BEFORE` seconds ahead of its `exp`, so that a request sent just
before renewal (or a slow one) never arrives with a token that ran out on the way. `nbf` lies a few seconds in
the past, as Kling's own example does, to absorb a vendor clock slightly behind ours. Neither key nor token is
ever logged: this object's `repr` shows neither.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping

TOKEN_SECONDS = 1800
"""A token's life, as in Kling's example: 30 minutes."""
NOT_BEFORE_SLACK = 5
RENEW_BEFORE = 300
"""Sign a new token once the current one has less than five minutes left."""


def b64url(data: bytes) -> str:
    """Base64url without padding, as JWT (RFC 7515) encodes each part."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_token(access_key: str, secret_key: str, now: float) -> tuple[str, int]:
    """A Kling API token valid from a few seconds before `now` for `TOKEN_SECONDS`, and its `exp`."""
    issued = int(now)
    expires = issued + TOKEN_SECONDS
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"iss": access_key, "exp": expires, "nbf": issued - NOT_BEFORE_SLACK}
    signing_input = f"{_part(header)}.{_part(claims)}"
    signature = hmac.new(secret_key.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}", expires


def _part(value: Mapping[str, object]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


class KlingToken:
    """The bearer token of one Kling account, signed on first use and renewed before it runs out."""

    def __init__(self, access_key: str, secret_key: str, *, clock: Callable[[], float] = time.time) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self._clock = clock
        """Wall-clock seconds: the claims are compared with Kling's own clock, so no monotonic time here."""
        self._token: str | None = None
        self._expires = 0

    def __repr__(self) -> str:
        return "KlingToken(<redacted>)"

    def current(self) -> str:
        now = self._clock()
        if self._token is None or now >= self._expires - RENEW_BEFORE:
            self._token, self._expires = sign_token(self._access_key, self._secret_key, now)
        return self._token

    def headers(self) -> dict[str, str]:
        """The request headers that authenticate to Kling's API (and only there: never to a result URL)."""
        return {"Authorization": f"Bearer {self.current()}"}
