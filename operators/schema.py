"""The event schema: every contract event type, its fields, and the decoder.

This is the one place that knows the wire format of input events
(../shared/contract/CONTRACT.md). ``decode`` turns raw bytes into a normalised
event dict or a ``DeadLetter`` value; it never raises on bad input, so a
malformed message flows to the dead-letter output instead of stopping the job.

Normalisation: strings trimmed; ``ts`` becomes UTC epoch milliseconds;
purchase/refund amounts gain ``amount_base`` in the base currency; optional
``quantity`` defaults to 1. Fields the contract does not list are carried.

To add an event type: add one entry to ``EVENT_TYPES`` (and its topic to
``TOPIC_OF_TYPE``); the profile logic decides what it means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from operators import jsonutil
from operators.timeutil import TimeFormatError, parse_ts, utc_offset_minutes

MAX_ID_CHARS = 256
MAX_SHORT_TEXT_CHARS = 2_048
MAX_LONG_TEXT_CHARS = 20_000
MAX_ITEMS = 500
UTC_OFFSET = "_utc_offset"  # minutes east of UTC that the event's ts was written with (the customer's clock)


class FieldError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field '{field}': {problem}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record came from: a topic partition and offset, or a file line."""

    topic: str | None
    partition: int | None = None
    offset: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"line {self.line}"
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    origin: Origin
    raw: bytes

    def to_record(self) -> dict[str, Any]:
        """The contract's dead-letter shape (``line`` in place of partition/offset for files)."""
        record: dict[str, Any] = {"reason": self.reason, "topic": self.origin.topic}
        if self.origin.line is not None:
            record["line"] = self.origin.line
        else:
            record["partition"] = self.origin.partition
            record["offset"] = self.origin.offset
        record["raw"] = self.raw.decode("utf-8", errors="backslashreplace")
        return record


# -- field checkers: each returns the normalised value or raises FieldError ----------------


def _text(limit: int) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise FieldError(name, f"must be a string, got {_kind(value)}")
        value = value.strip()
        if not value:
            raise FieldError(name, "must not be empty")
        if len(value) > limit:
            raise FieldError(name, f"is {len(value)} characters long; the limit is {limit}")
        return value

    return check


_id = _text(MAX_ID_CHARS)
_short = _text(MAX_SHORT_TEXT_CHARS)
_long = _text(MAX_LONG_TEXT_CHARS)


def _number(minimum: float, *, exclusive: bool, maximum: float = 1e12) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(name, f"must be a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise FieldError(name, f"must be finite, got {value!r}")
        if value < minimum or (exclusive and value == minimum):
            raise FieldError(name, f"must be {'>' if exclusive else '>='} {minimum:g}, got {value!r}")
        if value > maximum:
            raise FieldError(name, f"{value!r} is implausibly large (limit {maximum:g})")
        return value

    return check


def _integer(low: int, high: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise FieldError(name, f"must be an integer, got {_kind(value)}")
        if not low <= value <= high:
            raise FieldError(name, f"must be between {low} and {high}, got {value}")
        return value

    return check


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise FieldError(name, f"must be true or false, got {_kind(value)}")
    return value


def _one_of(*allowed: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value.strip() not in allowed:
            raise FieldError(name, f"must be one of {', '.join(allowed)}; got {value!r}"[:200])
        return value.strip()

    return check


def _currency(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value.strip()) != 3 or not value.strip().isalpha():
        raise FieldError(name, f"must be an ISO 4217 code such as EUR, got {value!r}"[:200])
    return value.strip().upper()


_price = _number(0.0, exclusive=False)
_amount = _number(0.0, exclusive=True)
_quantity = _integer(1, 100_000)


def _items(name: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise FieldError(name, f"must be a list of {{product_id, category, price, quantity}}, got {_kind(value)}")
    if len(value) > MAX_ITEMS:
        raise FieldError(name, f"has {len(value)} entries; the limit is {MAX_ITEMS}")
    out = []
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise FieldError(where, f"must be an object, got {_kind(item)}")
        clean = dict(item)
        clean["product_id"] = _id(f"{where}.product_id", item.get("product_id"))
        clean["category"] = _short(f"{where}.category", item.get("category"))
        clean["price"] = _price(f"{where}.price", item.get("price"))
        clean["quantity"] = _quantity(f"{where}.quantity", item.get("quantity", 1))
        out.append(clean)
    return out


Checker = Callable[[str, Any], Any]


@dataclass(frozen=True)
class EventType:
    required: Mapping[str, Checker]
    optional: Mapping[str, Checker]
    defaults: Mapping[str, Any] = None  # type: ignore[assignment]
    at_least_one_optional: bool = False


EVENT_TYPES: dict[str, EventType] = {
    "page_view": EventType({"url": _short}, {}),
    "product_view": EventType({"product_id": _id, "category": _short}, {"price": _price}),
    "search": EventType({"query": _short}, {}),
    "add_to_cart": EventType({"product_id": _id, "category": _short}, {"price": _price, "quantity": _quantity}, {"quantity": 1}),
    "remove_from_cart": EventType({"product_id": _id, "category": _short}, {"price": _price, "quantity": _quantity}, {"quantity": 1}),
    "purchase": EventType({"order_id": _id, "amount": _amount, "currency": _currency}, {"items": _items}),
    "refund": EventType({"order_id": _id, "amount": _amount, "currency": _currency}, {"reason": _short}),
    "support_message": EventType(
        {"ticket_id": _id, "text": _long, "direction": _one_of("inbound", "outbound")}, {"channel": _short}
    ),
    "ticket_opened": EventType({"ticket_id": _id}, {"subject": _short}),
    "ticket_closed": EventType({"ticket_id": _id}, {"resolved": _boolean, "csat": _integer(1, 5)}),
    "survey": EventType({"score": _integer(0, 10)}, {"comment": _long}),
    "consent": EventType(
        {},
        {
            "marketing_email": _boolean,
            "marketing_sms": _boolean,
            "marketing_push": _boolean,
            "contact_frequency": _one_of("normal", "low"),
        },
        at_least_one_optional=True,
    ),
    "erasure_request": EventType({}, {}),
    "identify": EventType({"anonymous_id": _id, "customer_id": _id}, {}),
    "alert_feedback": EventType({"alert_id": _id, "label": _one_of("correct", "incorrect")}, {"agent_id": _id}),
}

TOPIC_OF_TYPE: dict[str, str] = {
    **dict.fromkeys(("page_view", "product_view", "search", "add_to_cart", "remove_from_cart"), "clickstream"),
    **dict.fromkeys(("purchase", "refund"), "purchases"),
    **dict.fromkeys(("support_message", "ticket_opened", "ticket_closed", "survey"), "support"),
    **dict.fromkeys(("consent", "erasure_request", "identify", "alert_feedback"), "control"),
}

# Events that carry no customer history and so need no customer or anonymous id
# beyond what the contract demands of the envelope.
ENVELOPE_OPTIONAL = {"source": _short, "anonymous_id": _id}


class Decoder:
    """Validates and normalises raw records; bad ones become ``DeadLetter`` values."""

    def __init__(self, currency_rates: Mapping[str, float], base_currency: str = "USD", max_bytes: int = 1_000_000) -> None:
        self.rates = {code.upper(): float(rate) for code, rate in currency_rates.items()}
        self.rates.setdefault(base_currency.upper(), 1.0)
        self.base_currency = base_currency.upper()
        self.max_bytes = max_bytes

    def decode(self, raw: bytes, origin: Origin) -> dict[str, Any] | DeadLetter:
        if len(raw) > self.max_bytes:
            return DeadLetter(f"message is {len(raw)} bytes; the limit is {self.max_bytes} ({origin})", origin, raw[:4096])
        try:
            event = jsonutil.loads(raw)
        except jsonutil.JSONDecodeError as exc:
            return DeadLetter(f"not valid JSON: {exc} ({origin})", origin, raw)
        if not isinstance(event, dict):
            return DeadLetter(f"an event must be a JSON object, got {_kind(event)} ({origin})", origin, raw)
        try:
            self._normalise(event)
        except FieldError as exc:
            return DeadLetter(f"{exc} ({origin})", origin, raw)
        return event

    def _normalise(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if not isinstance(kind, str) or kind.strip() not in EVENT_TYPES:
            got = repr(kind)[:80] if kind is not None else "nothing"
            raise FieldError("type", f"must be one of the contract's event types, got {got}")
        kind = event["type"] = kind.strip()
        spec = EVENT_TYPES[kind]
        event["event_id"] = _id("event_id", event.get("event_id"))
        for name, check in ENVELOPE_OPTIONAL.items():
            if event.get(name) is not None:
                event[name] = check(name, event[name])
        if event.get("customer_id") is not None:
            event["customer_id"] = _id("customer_id", event["customer_id"])
        elif event.get("anonymous_id") is None:
            raise FieldError("customer_id", "is required when there is no anonymous_id")
        if "ts" not in event:
            raise FieldError("ts", "is required (RFC 3339 with offset, or epoch milliseconds)")
        try:
            raw_ts = event["ts"]
            event["ts"] = parse_ts(raw_ts)
        except TimeFormatError as exc:
            raise FieldError("ts", str(exc)) from None
        offset = utc_offset_minutes(raw_ts)
        if offset is not None:
            event[UTC_OFFSET] = offset
        for name, check in spec.required.items():
            if event.get(name) is None:
                raise FieldError(name, f"is required for {kind}")
            event[name] = check(name, event[name])
        present = 0
        for name, check in spec.optional.items():
            if event.get(name) is not None:
                event[name] = check(name, event[name])
                present += 1
        if spec.at_least_one_optional and not present:
            raise FieldError(", ".join(spec.optional), f"{kind} needs at least one of these")
        if spec.defaults:
            for name, value in spec.defaults.items():
                event.setdefault(name, value)
        if "amount" in spec.required:
            rate = self.rates.get(event["currency"])
            if rate is None:
                raise FieldError(
                    "currency", f"{event['currency']} has no rate to {self.base_currency}: add it under [currency_rates]"
                )
            event["amount_base"] = round(event["amount"] * rate, 6)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}".lower()
    if isinstance(value, (int, float)):
        return f"number {value!r}"[:60]
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    return {dict: "object", list: "array"}.get(type(value), type(value).__name__)
