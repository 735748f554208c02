"""The root of every exception crm-stream raises on purpose, so callers can catch one thing.

::

    CrmStreamError
     ├── ConfigError            settings that cannot run (config/settings.py); the message names the key
     ├── InputError             a record breaks the contract: never escapes a stage, it becomes a dead letter
     │    ├── FieldError        a field is missing, of the wrong type or out of range (operators/events/schema.py)
     │    └── TimeFormatError   a time in neither contract format (operators/events/timeutil.py)
     ├── UnavailableError       something outside the process cannot be reached or refused us
     │    ├── StoreUnavailable  Redis (operators/io/stores.py); writes retry, never drop
     │    ├── KafkaIOError      the broker (operators/io/kafka.py)
     │    │    ├── TopicMissing
     │    │    └── DeliveryFailed
     │    ├── AuditUnavailable  the audit stream, so personal data is not shown (operators/privacy/audit.py)
     │    ├── FeedbackUnavailable  the console cannot send feedback (flows/console/feed.py)
     │    └── StartupError      a dependency checked at start is not there (flows/preflight.py)
     ├── PiiKeyError            the PII key is missing or wrong (operators/privacy/pii.py)
     ├── SnapshotError          a model snapshot that cannot be restored (models/hub.py)
     ├── LexiconMissingError    a word list's package is not installed (models/anger/lexicon.py)
     └── NgramDataError         the learned Chinese anger weights are missing or damaged (models/anger/learned.py)

Each also derives from the built-in it used to be (``ValueError``, ``RuntimeError``, ``ImportError``), so
code that caught those keeps working. Messages say what failed, where, and what to do.

>>> from crm_stream.operators.events.schema import FieldError
>>> issubclass(FieldError, InputError) and issubclass(FieldError, CrmStreamError)
True
"""

from __future__ import annotations


class CrmStreamError(Exception):
    """Anything crm-stream raises on purpose; the CLI and the console catch this one."""


class InputError(CrmStreamError):
    """A record breaks the contract."""


class UnavailableError(CrmStreamError):
    """A store, broker or stream outside the process cannot be reached."""
