"""A logging filter that keeps secrets and personal data out of every log line.

Settings are masked when printed (``Settings.masked``), but a secret can still
reach a log line another way: a client library's error that quotes a URL, a
librdkafka debug line, an exception message. So the CLI puts this filter on the
root logger's handlers: each record is formatted once, every configured secret
(``config.settings.secret_values``) is replaced by ``***`` and e-mails, phones
and card numbers are redacted (operators/privacy/redact.py), traceback text included.
Log lines are rare next to events, so the cost is of no account.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from crm_stream.operators.privacy.redact import redact

MASK = "***"


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        record.msg, record.args = self.clean(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        return True


_FILTER = RedactingFilter()


def install(logger: logging.Logger | None = None) -> RedactingFilter:
    """Put the process-wide filter on every handler of ``logger`` (the root logger by default); idempotent."""
    for handler in (logger or logging.getLogger()).handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    return _FILTER


def add_secrets(secrets: Iterable[str]) -> None:
    """Mask these values too, from now on (called once settings are loaded)."""
    _FILTER.set_secrets((*_FILTER.secrets, *secrets))
