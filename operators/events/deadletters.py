"""Dead letters that can always be forwarded, and the dead letter of a record a stage failed on.

Two promises of the contract meet here: a bad record "never stops the engine and is never silently dropped"
(docs/contract.md). So a dead letter must itself be writable wherever it goes: ``bounded`` keeps
its encoded size within the output's message limit (Kafka's ``message.max.bytes``: a record of nearly that size
whose ``raw`` needs escaping would otherwise grow past it and fail to produce, which stops the engine). And a
record that passed validation but made a stage fail (a bug, or a limit the decoder does not know of) becomes a
dead letter with the stage, the error and its source position (``failure``), so that stage goes on.
"""

from __future__ import annotations

from typing import Any

from crm_stream.operators.io import jsonutil
from crm_stream.operators.privacy.redact import redact
from crm_stream.operators.profile.state import SOURCE, SOURCE_OFFSET

ENVELOPE_BYTES = 1_024
"""Room left under the message limit for the Kafka record's key and framing (librdkafka refuses a value within 36
bytes of ``message.max.bytes``, measured with confluent-kafka 2.x)."""


def bounded(record: dict[str, Any], limit: int) -> bytes:
    """``record`` encoded, its ``raw`` cut (and the cut said in ``reason``) when the whole would not fit a Kafka
    message of at most ``limit`` bytes (``ENVELOPE_BYTES`` are left for the record's framing).

    >>> bounded({"reason": "r", "raw": "x"}, 2_000)
    b'{"raw":"x","reason":"r"}'
    >>> out = jsonutil.loads(bounded({"reason": "bad", "raw": '"' * 5_000}, 3_000))
    >>> len(out["raw"]) < 5_000, out["reason"].startswith("bad [raw cut to its first")
    (True, True)
    """
    out = jsonutil.dumps(record)
    fits = limit - ENVELOPE_BYTES
    if len(out) <= fits:
        return out
    raw = str(record.get("raw") or "")
    budget = max(0, fits - 256 - len(jsonutil.dumps({**record, "raw": ""})))  # 256: the note added to the reason
    keep = min(len(raw), budget)
    while True:  # escaping makes bytes per character vary (1 to 6): halve until it fits
        cut = {
            **record,
            "reason": f"{record.get('reason')} [raw cut to its first {keep} of {len(raw)} characters: the dead letter "
            f"must fit the output's {limit}-byte limit]",
            "raw": raw[:keep],
        }
        out = jsonutil.dumps(cut)
        if len(out) <= fits or keep == 0:
            return out
        keep //= 2


def position(event: dict[str, Any]) -> dict[str, Any]:
    """The contract's position fields of a decoded event: ``topic``, and ``partition`` and ``offset`` or ``line``.

    >>> position({"_src": "crm.purchases#3|anon-1", "_off": 41})
    {'topic': 'crm.purchases', 'partition': 3, 'offset': 41}
    >>> position({"_src": "file#-1", "_off": 7})
    {'topic': None, 'line': 7}
    """
    source = str(event.get(SOURCE) or "").split("|", 1)[0]  # a visitor's path adds "|anonymous_id"
    topic, _, partition = source.rpartition("#")
    offset = event.get(SOURCE_OFFSET)
    try:
        number = int(partition)
    except ValueError:
        return {"topic": source or None, "partition": None, "offset": offset}
    if number < 0:  # files: the offset is the line number (operators/io/files.py)
        return {"topic": None if topic == "file" else topic, "line": offset}
    return {"topic": topic, "partition": number, "offset": offset}


def where(event: dict[str, Any]) -> str:
    """``topic[partition]@offset`` or ``line N``, for a reason a person reads.

    >>> where({"_src": "crm.control#0", "_off": 9}), where({"_src": "file#-1", "_off": 2}), where({})
    ('crm.control[0]@9', 'line 2', 'an unknown position')
    """
    pos = position(event)
    if "line" in pos:
        return f"line {pos['line']}"
    if pos["topic"] is None:
        return "an unknown position"
    return f"{pos['topic']}[{pos['partition']}]@{pos['offset']}"


def _text(event: dict[str, Any]) -> str:
    """As much of the event as Python's own repr can show (it recurses too, and may give up)."""
    try:
        return repr(event)[:4_000]
    except RecursionError:
        return "(too deeply nested to show)"


def failure(event: dict[str, Any], stage: str, exc: BaseException, limit: int) -> bytes:
    """The dead letter of an event that passed validation but that ``stage`` could not process: kept, with the reason.

    ``raw`` is the event as decoded (the original bytes are gone by then), private fields dropped and always redacted
    (operators/privacy/redact.py): a bug report needs the event's shape, not the customer's e-mail.

    >>> record = jsonutil.loads(failure({"event_id": "e1", "type": "search", "_src": "file#-1", "_off": 3}, "identity",
    ...     TypeError("Recursion limit reached"), 10_000))
    >>> record["reason"]
    'identity could not process search event e1 (line 3): TypeError: Recursion limit reached; the event was set aside here so the engine goes on: please report it with this record'
    >>> record["line"], record["raw"]
    (3, '{"event_id":"e1","type":"search"}')
    """
    try:
        shown = jsonutil.dumps({k: v for k, v in event.items() if not str(k).startswith("_")}).decode()
    except Exception as err:  # the event itself may be what cannot be encoded
        shown = f"(the event could not be encoded: {type(err).__name__}: {err}) {_text(event)}"
    record: dict[str, Any] = {
        "reason": redact(
            f"{stage} could not process {event.get('type')} event {event.get('event_id')} ({where(event)}): "
            f"{type(exc).__name__}: {str(exc)[:500]}; the event was set aside here so the engine goes on: "
            "please report it with this record"
        ),
        **position(event),
        "raw": redact(shown),
    }
    return bounded(record, limit)
