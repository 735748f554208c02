"""Who is signed in to the agents' console: password hashes and signed session tokens (stdlib only).

Passwords are never stored: ``[console.password_hashes]`` holds scrypt hashes
(``crm-stream console-password NAME`` makes one). A successful sign-in gets a
session token, ``agent.expires.signature`` (HMAC-SHA256 over the first two
parts), sent back as an HttpOnly cookie or as ``Authorization: Bearer``. No
server-side session table: any console process with the same
``console.session_secret`` accepts it until it expires.

>>> hashed = hash_password("s3cret", salt=b"0123456789abcdef")
>>> verify_password("s3cret", hashed), verify_password("guess", hashed)
(True, False)
>>> sessions = SessionSigner(b"k" * 32, ttl_s=60, clock=lambda: 1000.0)
>>> sessions.verify(sessions.issue("alice"))
'alice'
>>> sessions.verify("alice.99999999999.forged") is None
True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable, Mapping

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
AGENT_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
"""Agent names travel in tokens (split on '.') and become ``agent_id``; keep them plain."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash``: the form ``[console.password_hashes]`` expects."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = hashed.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Checked against when the agent is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password("", salt=b"crm-stream-dummy")


class Agents:
    """The agents allowed in, from ``console.password_hashes``."""

    def __init__(self, password_hashes: Mapping[str, str]) -> None:
        self.password_hashes = dict(password_hashes)

    def authenticate(self, agent: str, password: str) -> bool:
        hashed = self.password_hashes.get(agent)
        ok = verify_password(password, hashed or _DUMMY_HASH)
        return ok and hashed is not None and bool(AGENT_NAME.match(agent))


class SessionSigner:
    """Issues and checks ``agent.expires.signature`` tokens; the clock is injected for tests."""

    def __init__(self, secret: bytes, *, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("console.session_secret must be at least 16 characters (or empty for a random one per process)")
        self.secret = secret
        self.ttl_s = ttl_s
        self.clock = clock

    @classmethod
    def from_setting(cls, secret: str, ttl_s: float, clock: Callable[[], float] = time.time) -> SessionSigner:
        return cls(secret.encode() if secret else os.urandom(32), ttl_s=ttl_s, clock=clock)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, agent: str) -> str:
        if not AGENT_NAME.match(agent):
            raise ValueError(f"agent name {agent!r} may use only letters, digits and _ . @ - (at most 64)")
        payload = f"{agent}.{int(self.clock() + self.ttl_s)}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str | None) -> str | None:
        """The agent the token was issued to, or None if it is forged, malformed or expired."""
        if not token or token.count(".") < 2:
            return None
        payload, _, signature = token.rpartition(".")
        agent, _, expires = payload.rpartition(".")
        if not hmac.compare_digest(self._sign(payload), signature) or not expires.isdigit():
            return None
        return agent if int(expires) > self.clock() else None
