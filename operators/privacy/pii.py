"""Direct identifiers at rest: pseudonymous key names and encrypted values, from one key.

With ``store.pii_key`` set (from the environment: ``CRM_STREAM__STORE__PII_KEY``):

* key names carry ``HMAC-SHA256(k1, id)`` (128 bits, hex) instead of a customer
  or anonymous id (``operators/io/keys.py``), so ``KEYS``/``SCAN`` and the RDB/AOF
  files show no identifier; whoever holds the key (``crm-stream profile ID``)
  computes the same name;
* every value the engine writes is sealed with AES-256-GCM under ``k2``
  (profiles hold ``customer_id`` and anonymous ids, timer buckets and the
  model snapshot hold customer ids), with a random 96-bit nonce and a 4-byte key id, so a
  value written under another key fails with a message that says so.

``k1``, ``k2`` and the key id are derived from the configured secret with
HMAC-SHA256 and fixed labels, so one secret serves both and neither use
weakens the other. Values written before a key was set (no header) are read
as they are and sealed on their next write. Changing the key is a migration,
not a setting change: see the README ("Privacy and security").
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from crm_stream.errors import CrmStreamError

MAGIC = b"crmE1"
"""Header of a sealed value: format version 1 (AES-256-GCM), then the key id, the nonce, the ciphertext."""
KEY_ID_BYTES = 4
NONCE_BYTES = 12
MIN_KEY_CHARS = 32
MAX_CACHED = 1 << 18
"""Pseudonyms cached per process: ~40 MB at most; an HMAC costs ~1 us, a cached one ~0.05 us."""


class PiiKeyError(CrmStreamError, ValueError):
    """A stored value cannot be opened with the configured key; the message says why and what to do."""


class PiiKey:
    """Pseudonyms and sealed values under one secret (see the module docstring)."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_KEY_CHARS:
            raise ValueError(
                f"the PII key has {len(secret)} characters; use at least {MIN_KEY_CHARS} random ones "
                "(e.g. `openssl rand -hex 32`)"
            )
        master = secret.encode()
        self._pseudonym_key = _derive(master, b"crm-stream/pseudonym/v1")
        self.key_id = _derive(master, b"crm-stream/key-id/v1")[:KEY_ID_BYTES]
        self._sealing_key = _derive(master, b"crm-stream/seal/v1")
        self._aead: Any = None
        self._header = MAGIC + self.key_id
        self._pseudonyms: dict[str, str] = {}

    def __repr__(self) -> str:  # never the secret
        return f"PiiKey(key_id={self.key_id.hex()})"

    def pseudonym(self, entity_id: str) -> str:
        cached = self._pseudonyms.get(entity_id)
        if cached is None:
            if len(self._pseudonyms) >= MAX_CACHED:
                self._pseudonyms.clear()
            cached = hmac.new(self._pseudonym_key, entity_id.encode(), hashlib.sha256).hexdigest()[:32]
            self._pseudonyms[entity_id] = cached
        return cached

    def _cipher(self) -> Any:
        if self._aead is None:
            try:
                from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            except ImportError as exc:  # pragma: no cover - a core dependency
                raise ImportError("store.pii_key needs the cryptography package: pip install 'cryptography>=42'") from exc
            self._aead = AESGCM(self._sealing_key)
        return self._aead

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return self._header + nonce + self._cipher().encrypt(nonce, plaintext, self._header)

    def open(self, stored: bytes) -> bytes:
        """The plaintext of a sealed value; a value without the header (written before the key was set) as it is."""
        if not stored.startswith(MAGIC):
            return stored
        header = stored[: len(self._header)]
        if header != self._header:
            raise PiiKeyError(
                f"a stored value was sealed under PII key id {header[len(MAGIC) :].hex()}, but the configured key has id "
                f"{self.key_id.hex()}: store.pii_key (CRM_STREAM__STORE__PII_KEY) changed; set the key the data was "
                "written with (README: Privacy and security, rotation)"
            )
        from cryptography.exceptions import InvalidTag

        nonce = stored[len(header) : len(header) + NONCE_BYTES]
        try:
            return bytes(self._cipher().decrypt(nonce, stored[len(header) + NONCE_BYTES :], header))
        except InvalidTag:
            raise PiiKeyError(
                "a stored value failed its integrity check (truncated or altered in Redis); "
                "delete the key or restore it from a backup"
            ) from None


def _derive(master: bytes, label: bytes) -> bytes:
    return hmac.new(master, label, hashlib.sha256).digest()


class SealedStore:
    """A Redis store whose values are sealed on write and opened on read (``encode`` / ``get_many`` / ``scan``).

    A wrapper, not a subclass, so every Redis store (single node, cluster) gets
    the same sealing; everything else is the wrapped store's.
    """

    def __init__(self, inner: Any, key: PiiKey) -> None:
        self.inner = inner
        self.key = key

    def encode(self, value: Any) -> bytes:
        return self.key.seal(self.inner.encode(value))

    def decode(self, stored: bytes) -> Any:
        return self.inner.decode(stored)

    def get_many(self, keys: Any) -> list[bytes | None]:
        open_ = self.key.open
        return [None if b is None else open_(b) for b in self.inner.get_many(keys)]

    def write(self, puts: dict[str, bytes], deletes: Any = ()) -> None:
        self.inner.write(puts, deletes)

    def scan(self, prefix: str) -> Any:
        open_ = self.key.open
        return ((k, open_(v)) for k, v in self.inner.scan(prefix))

    def __getattr__(self, name: str) -> Any:  # ping, close, client, url, ... of the wrapped store
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:  # e.g. runtime's on_retry hook: the wrapped store's
        if name in ("inner", "key"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)
