"""The event schema: every contract event type, its fields, and the decoder.

This is the one place that knows the wire format of input events
(docs/contract.md). ``decode`` turns raw bytes into a normalised
event dict or a ``DeadLetter`` value; it never raises on bad input, so a
malformed message flows to the dead-letter output instead of stopping the job.

Normalisation: strings trimmed; ``ts`` becomes UTC epoch milliseconds;
purchase/refund amounts gain ``amount_base`` in the base currency; optional
``quantity`` defaults to 1. Fields the contract does not list are carried.

To add an event type: add one entry to ``EVENT_TYPES`` (and its topic to
``TOPIC_OF_TYPE``); the profile logic decides what it means.

Fast path: almost every event is well formed, and the full validation spends
most of its time on generality (checker closures, ``isinstance`` chains,
error-message plumbing). ``Decoder.decode_fast`` runs a flat plan per event
type, compiled from ``EVENT_TYPES``, with exact type checks and no error
messages; on ANY irregularity it returns None and the caller runs the full
path (``decode_full``) from the raw bytes, which alone words dead letters. The
fast path only ever accepts what the full path accepts, and produces the very
same dict (keys, key order, values); tests/unit/test_decode_fast.py holds it
to that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from crm_stream.errors import InputError
from crm_stream.operators.events.timeutil import (
    MAX_TS_MS,
    MIN_TS_MS,
    TimeFormatError,
    parse_rfc3339_fast,
    parse_ts,
    utc_offset_minutes,
)
from crm_stream.operators.io import jsonutil

MAX_ID_CHARS = 256
MAX_SHORT_TEXT_CHARS = 2_048
MAX_LONG_TEXT_CHARS = 20_000
MAX_ITEMS = 500
MAX_NESTING = 64
"""Levels of objects and arrays an event may nest, the event itself being level 1. orjson reads 1,024 levels but
writes only 254, and later stages wrap an event in a few more (a visitor's buffer: record -> events -> event; an
identify's released events; a dead letter's ``raw``): an event deeper than this could be decoded here and then fail to
encode there, stopping the engine on every restart. Real events nest 2-4 levels (a purchase's items)."""
UTC_OFFSET = "_utc_offset"  # minutes east of UTC that the event's ts was written with (the customer's clock)


class FieldError(InputError, ValueError):
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
# Each factory also registers what its checker accepts in ``_FAST`` (kind, parameters), from which
# the decoder compiles its fast path; a checker not registered there keeps its type on the full path.

_TEXT, _NUMBER, _INTEGER, _BOOLEAN, _ONE_OF, _CURRENCY, _ITEMS = range(7)
_FAST: dict[Callable[[str, Any], Any], tuple[int, Any, Any]] = {}


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

    _FAST[check] = (_TEXT, limit, None)
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

    _FAST[check] = (_NUMBER, (minimum, exclusive), maximum)
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

    _FAST[check] = (_INTEGER, low, high)
    return check


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise FieldError(name, f"must be true or false, got {_kind(value)}")
    return value


_FAST[_boolean] = (_BOOLEAN, None, None)


def _one_of(*allowed: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value.strip() not in allowed:
            raise FieldError(name, f"must be one of {', '.join(allowed)}; got {value!r}"[:200])
        return value.strip()

    _FAST[check] = (_ONE_OF, frozenset(allowed), None)
    return check


def _currency(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value.strip()) != 3 or not value.strip().isalpha():
        raise FieldError(name, f"must be an ISO 4217 code such as EUR, got {value!r}"[:200])
    return value.strip().upper()


_FAST[_currency] = (_CURRENCY, None, None)

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


_FAST[_items] = (_ITEMS, None, None)


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
    "remove_from_cart": EventType(
        {"product_id": _id, "category": _short}, {"price": _price, "quantity": _quantity}, {"quantity": 1}
    ),
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


_FastField = tuple[str, bool, int, Any, Any]
"""(name, required, kind, parameter, parameter): one field as the fast path checks it (kinds from ``_FAST``)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """One event type flattened for ``Decoder.decode_fast``: envelope and type fields together.

    Text fields, most of every event, get a loop of their own with no dispatch on the kind.
    """

    texts: tuple[tuple[str, bool, int], ...]  # (name, required, length limit)
    others: tuple[_FastField, ...]
    any_of: tuple[str, ...]  # at least one of these must be present (consent), or () for no such rule
    defaults: tuple[tuple[str, Any], ...]
    priced: bool  # has ``amount``: gains ``amount_base``
    known: frozenset[str]  # every field the type lists, envelope included: any other is carried, and may nest


_loads = orjson.loads  # jsonutil.loads minus a Python call: the fast path counts every 50 ns


def _fast_field(name: str, required: bool, check: Checker) -> _FastField | None:
    fast = _FAST.get(check)
    return None if fast is None else (name, required, *fast)


def _compile(spec: EventType) -> _Plan | None:
    """The type's fast plan, or None where one of its checkers has no fast form (it stays on the full path)."""
    fields = [_fast_field("event_id", True, _id)]
    fields += [_fast_field(name, False, check) for name, check in ENVELOPE_OPTIONAL.items()]
    fields.append(_fast_field("customer_id", False, _id))
    fields += [_fast_field(name, True, check) for name, check in spec.required.items()]
    fields += [_fast_field(name, False, check) for name, check in spec.optional.items()]
    known = [field for field in fields if field is not None]
    if len(known) < len(fields):
        return None
    return _Plan(
        tuple((name, required, limit) for name, required, check, limit, _ in known if check == _TEXT),
        tuple(field for field in known if field[2] != _TEXT),
        tuple(spec.optional) if spec.at_least_one_optional else (),
        tuple((spec.defaults or {}).items()),
        "amount" in spec.required,
        frozenset(name for name, *_ in fields) | {"type", "ts"},  # type: ignore[misc]
    )


_PRICE_LOW, _PRICE_HIGH = _FAST[_price][1][0], _FAST[_price][2]
_QUANTITY_LOW, _QUANTITY_HIGH = _FAST[_quantity][1], _FAST[_quantity][2]


_ITEM_FIELDS = frozenset(("product_id", "category", "price", "quantity"))


def _fast_items(value: Any) -> list[dict[str, Any]] | None:
    """``_items`` for a well-formed list (integer quantities only), or None: let ``_items`` word the problem."""
    if type(value) is not list or len(value) > MAX_ITEMS:
        return None
    out = []
    for item in value:
        if type(item) is not dict:
            return None
        product, category, price, quantity = (
            item.get("product_id"),
            item.get("category"),
            item.get("price"),
            item.get("quantity", 1),
        )
        if type(product) is not str or type(category) is not str or type(quantity) is not int:
            return None
        product, category = product.strip(), category.strip()
        if not product or len(product) > MAX_ID_CHARS or not category or len(category) > MAX_SHORT_TEXT_CHARS:
            return None
        if (type(price) is not float and type(price) is not int) or not _PRICE_LOW <= price <= _PRICE_HIGH:
            return None  # NaN fails the comparison too
        if not _QUANTITY_LOW <= quantity <= _QUANTITY_HIGH:
            return None
        if not item.keys() <= _ITEM_FIELDS and _too_deep(item, 3):  # its own fields are carried: event, items, item
            return None
        clean = dict(item)
        clean["product_id"], clean["category"], clean["price"], clean["quantity"] = product, category, price, quantity
        out.append(clean)
    return out


def _too_deep(value: list[Any] | dict[str, Any], level: int) -> bool:
    """Does ``value``, itself at nesting ``level``, hold a container deeper than ``MAX_NESTING``? A loop, not recursion:
    orjson hands us up to 1,024 levels, past Python's recursion limit.

    >>> _too_deep({"a": [[1]]}, 2), _too_deep([[[[1]]]], MAX_NESTING - 2)
    (False, True)
    """
    stack = [(value, level)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > MAX_NESTING:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                push((child, depth + 1))
    return False


def _nesting_error(event: dict[str, Any], names: Iterable[str] | None = None) -> FieldError | None:
    """The first top-level field (of ``names``, default all) nested deeper than ``MAX_NESTING`` allows, as the dead
    letter's reason, or None."""
    for name in event if names is None else names:
        value = event[name]
        if (type(value) is dict or type(value) is list) and _too_deep(value, 2):
            return FieldError(
                str(name)[:80],
                f"nests more than {MAX_NESTING} levels of objects and arrays (the limit: every later stage must be able "
                "to store and forward the event; flatten the field)",
            )
    return None


class Decoder:
    """Validates and normalises raw records; bad ones become ``DeadLetter`` values."""

    def __init__(self, currency_rates: Mapping[str, float], base_currency: str = "USD", max_bytes: int = 1_000_000) -> None:
        self.rates = {code.upper(): float(rate) for code, rate in currency_rates.items()}
        self.rates.setdefault(base_currency.upper(), 1.0)
        self.base_currency = base_currency.upper()
        self.max_bytes = max_bytes
        self._plans = {kind: plan for kind, spec in EVENT_TYPES.items() if (plan := _compile(spec)) is not None}

    def decode(self, raw: bytes, origin: Origin) -> dict[str, Any] | DeadLetter:
        """The normalised event, or a dead letter saying what is wrong and where it came from."""
        event = self.decode_fast(raw)
        return event if event is not None else self.decode_full(raw, origin)

    def decode_fast(self, raw: bytes) -> dict[str, Any] | None:
        """The normalised event if ``raw`` is a well-formed event, else None: ``decode_full`` then has the answer.

        Returns exactly what ``decode_full`` would (same keys in the same order, same values) whenever it
        returns an event; it never builds an error message, so the caller needs no ``Origin`` until it fails.
        """
        if len(raw) > self.max_bytes:
            return None
        try:
            event = _loads(raw)
        except jsonutil.JSONDecodeError:
            return None
        if type(event) is not dict:
            return None
        kind = event.get("type")
        plan = self._plans.get(kind) if type(kind) is str else None
        if plan is None:
            return None
        # Unknown fields are carried, so they must stay encodable downstream: only an event with a field its type does
        # not list can nest (known fields are scalars, and ``items`` is checked item by item), and only it is walked.
        unknown = event.keys() - plan.known
        if unknown and _nesting_error(event, unknown) is not None:
            return None
        get = event.get
        for name, required, limit in plan.texts:
            value = get(name)
            if type(value) is not str:
                if value is None and not required:
                    continue
                return None
            value = value.strip()
            if not value or len(value) > limit:
                return None
            event[name] = value
        for name, required, check, a, b in plan.others:
            value = get(name)
            if value is None:
                if required:
                    return None
                continue
            if check == _NUMBER:  # a: (minimum, exclusive), b: maximum; NaN fails every comparison
                if type(value) is not float and type(value) is not int:
                    return None
                if not (value > a[0] if a[1] else value >= a[0]) or not value <= b:
                    return None
            elif check == _INTEGER:  # a..b; integral floats are rare: the full path converts them
                if type(value) is not int or not a <= value <= b:
                    return None
            elif check == _BOOLEAN:
                if type(value) is not bool:
                    return None
            elif check == _ONE_OF:  # a: the allowed words
                if type(value) is not str:
                    return None
                value = value.strip()
                if value not in a:
                    return None
            elif check == _CURRENCY:  # alphabetic, so no whitespace: strip() would change nothing
                if type(value) is not str or len(value) != 3 or not value.isalpha():
                    return None
                value = value.upper()
            else:  # _ITEMS
                value = _fast_items(value)
                if value is None:
                    return None
            event[name] = value
        if get("customer_id") is None and get("anonymous_id") is None:
            return None
        if plan.any_of and all(get(name) is None for name in plan.any_of):
            return None
        ts = get("ts")
        if type(ts) is int:
            if not MIN_TS_MS <= ts < MAX_TS_MS:
                return None
        elif type(ts) is str:
            parsed = parse_rfc3339_fast(ts)
            if parsed is None:
                return None
            event["ts"], offset = parsed
            if offset is not None:
                event[UTC_OFFSET] = offset
        else:
            return None
        for name, default in plan.defaults:
            event.setdefault(name, default)
        if plan.priced:
            rate = self.rates.get(get("currency"))  # type: ignore[arg-type]
            if rate is None:
                return None
            event["amount_base"] = round(event["amount"] * rate, 6)
        return event

    def decode_full(self, raw: bytes, origin: Origin) -> dict[str, Any] | DeadLetter:
        """The complete validation, which words every dead letter: the reference ``decode_fast`` must agree with."""
        if len(raw) > self.max_bytes:
            return DeadLetter(f"message is {len(raw)} bytes; the limit is {self.max_bytes} ({origin})", origin, raw[:4096])
        try:
            event = jsonutil.loads(raw)
        except jsonutil.JSONDecodeError as exc:
            return DeadLetter(f"not valid JSON: {exc} ({origin})", origin, raw)
        if not isinstance(event, dict):
            return DeadLetter(f"an event must be a JSON object, got {_kind(event)} ({origin})", origin, raw)
        too_deep = _nesting_error(event)
        if too_deep is not None:
            return DeadLetter(f"{too_deep} ({origin})", origin, raw)
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
    names: dict[type, str] = {dict: "object", list: "array"}
    return names.get(type(value), type(value).__name__)
