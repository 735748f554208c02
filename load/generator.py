"""A fast synthetic source of contract events, for benchmarks and (later) rate-controlled load.

Unlike ``operators.events.simulator.Shop`` (customers with habits and a ground truth,
~30-60 k events/s), this generator knows nothing about customers beyond their
number: each event is a pre-built template of its type with the variable
parts (event id, customer id, event time) filled in by one bytes ``%``
formatting, so it makes 0.35-0.55 M events/s on the 2-core VM and is never
the bottleneck of what it measures. Every event passes ``operators.events.schema.Decoder`` (the benchmark
checks the first thousand before it starts).

The mix is clickstream-heavy, as in a real shop (weights in ``TYPE_WEIGHTS``):

    ~85%  page_view, product_view, search, add_to_cart, remove_from_cart   -> clickstream
    ~8%   purchase, refund                                                   -> purchases
    ~5%   support_message, ticket_opened, ticket_closed, survey              -> support
    ~2%   consent, identify                                                  -> control

Customers: ``customers`` distinct ids ``c0000000``..; each event picks one
``uniform``-ly (the default: the most distinct keys per event, the hardest
case for any cache; N events touch ``M * (1 - exp(-N/M))`` customers) or
``zipf`` (a bounded power law with exponent 1 over a fixed random
permutation of the ids, so a few customers are very active and most are
seen once or twice). Every event carries a ``customer_id``: there are no
anonymous-only visitors, so every event is applied to a profile and the
count the engine reports (``applied``) must reach exactly the number
produced. ``identify`` links the customer to a synthetic ``anonymous_id``.

Event time starts at ``start`` and advances ``ms_per_event`` per event
(default 300 ms: 2 M events span a week, so a customer's events are hours
or days apart, as with a real shop's million customers). Timestamps come in
the contract's forms, as the real sources write them: app clickstream in
epoch ms, web and support in local time with an offset, orders in UTC.

>>> gen = EventGenerator(customers=1000, seed=1)
>>> role, key, value = gen.batch(5)[0]
>>> role in ("clickstream", "purchases", "support", "control") and key.startswith("c")
True
>>> EventGenerator(customers=1000, seed=1).batch(100) == EventGenerator(customers=1000, seed=1).batch(100)
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

import numpy as np
import orjson

from crm_stream.operators.events.schema import TOPIC_OF_TYPE
from crm_stream.operators.events.simulator import AGENT, ANGRY, ANGRY_AGAIN, CATEGORIES, POLITE, PRESALES, REFUND_REASONS, THANKS
from crm_stream.operators.events.timeutil import MS_PER_DAY, parse_ts

TYPE_WEIGHTS: dict[str, float] = {
    "page_view": 30.0, "product_view": 38.0, "search": 9.0, "add_to_cart": 6.0, "remove_from_cart": 2.0,
    "purchase": 6.5, "refund": 1.5,
    "support_message": 2.5, "ticket_opened": 1.0, "ticket_closed": 1.0, "survey": 0.5,
    "consent": 1.2, "identify": 0.8,
}  # fmt: skip
VARIANTS_PER_TYPE = 48
CURRENCIES = (("USD", 1.0, 80), ("EUR", 1.08, 12), ("CNY", 0.138, 8))  # code, USD per unit, weight
# (offset suffix, minutes east of UTC, weight) for sources that write local time.
OFFSETS = (("Z", 0, 2), ("+08:00", 480, 3), ("-05:00", -300, 3), ("+01:00", 60, 2), ("+05:30", 330, 1))

# How each template writes ``ts``.
TS_EPOCH_MS, TS_UTC_MS, TS_LOCAL_MS, TS_LOCAL_S = 0, 1, 2, 3

# Placeholders put into template dicts before they are dumped; each becomes
# positional bytes-%-format fields: the run's event-id prefix and event number,
# the customer number, the formatted time. Positional formatting is ~40% cheaper
# than a mapping; the envelope always comes first (event id, customer, time),
# and a template needs at most one extra: an order id or a customer-derived id.
_FIELDS = {
    b'"@EID@"': b'"%s%d"',
    b'"@CID@"': b'"c%07d"',
    b'"@TS@"': b"%s",
    b'"@OID@"': b'"o-%s%d"',
    b'"@TID@"': b'"t-c%07d"',
    b'"@AID@"': b'"a-c%07d"',
}
ENVELOPE = (b'"@EID@"', b'"@CID@"', b'"@TS@"')
EXTRA_NONE, EXTRA_ORDER, EXTRA_CUSTOMER = 0, 1, 2


def customer_id(index: int) -> str:
    """The id of customer ``index``, as the events spell it."""
    return f"c{index:07d}"


class _Template:
    __slots__ = ("kind", "role", "fmt", "extra", "ts_form", "offset_ms", "suffix")

    def __init__(self, kind: str, event: dict[str, Any], ts_form: int, offset_min: int = 0, suffix: str = "Z") -> None:
        self.kind = kind
        self.role = TOPIC_OF_TYPE[kind]
        raw = orjson.dumps(event).replace(b"%", b"%%")
        found = sorted((raw.find(p), p) for p in _FIELDS if p in raw)
        order = tuple(p for _, p in found)
        if order[:3] != ENVELOPE or len(order) > 4 or any(raw.count(p) > 1 for p in order):
            raise ValueError(f"template {raw[:80]!r}: the envelope must come first, then at most one extra id")
        self.extra = EXTRA_NONE if len(order) == 3 else EXTRA_ORDER if order[3] == b'"@OID@"' else EXTRA_CUSTOMER
        for placeholder, field in _FIELDS.items():
            raw = raw.replace(placeholder, field)
        self.fmt = raw
        self.ts_form = ts_form
        self.offset_ms = offset_min * 60_000
        self.suffix = suffix.encode()


class EventGenerator:
    """Contract events for ``customers`` customers; ``batch(n)`` returns ``(topic_role, key, value)`` like ``Shop.records()``.

    Deterministic for a seed. Keeps no per-customer state beyond one bit
    ("seen") per customer, so ``distinct_customers`` can be reported.
    """

    def __init__(
        self,
        customers: int = 1_000_000,
        *,
        seed: int = 7,
        distribution: str = "uniform",
        start: str = "2026-01-01T00:00:00Z",
        ms_per_event: int = 300,
        id_prefix: str | None = None,
        weights: dict[str, float] | None = None,
    ) -> None:
        if customers <= 0:
            raise ValueError(f"customers = {customers!r} must be greater than 0")
        if distribution not in ("uniform", "zipf"):
            raise ValueError(f"distribution = {distribution!r} must be 'uniform' or 'zipf'")
        self.customers = customers
        self.distribution = distribution
        self.ms_per_event = ms_per_event
        self.clock_ms = parse_ts(start)
        self.prefix = (id_prefix if id_prefix is not None else f"g{seed}-").encode()
        self.produced = 0
        self._np = np.random.default_rng(seed)
        self._templates = _build_templates(Random(seed))
        mix = {**TYPE_WEIGHTS, **(weights or {})}  # ``weights``: another mix (load.generate's presets); unnamed types keep theirs
        if any(w < 0 for w in mix.values()) or not any(mix.values()):
            raise ValueError(f"weights = {weights!r}: every weight must be >= 0 and one > 0")
        weights = np.array([mix[t.kind] / _variants(t.kind) for t in self._templates], dtype=np.float64)
        self._cum = np.cumsum(weights / weights.sum())
        self._cum[-1] = 1.0
        self._seen = np.zeros(customers, dtype=np.bool_)
        self._template_counts = np.zeros(len(self._templates), dtype=np.int64)
        self._perm = self._np.permutation(customers) if distribution == "zipf" else None
        self._days: dict[int, bytes] = {}

    # -- public API -------------------------------------------------------------------------

    def batch(self, n: int) -> list[tuple[str, str, bytes]]:
        """The next ``n`` records."""
        if n <= 0:
            return []
        draws = self._np.random(n)
        picks = np.searchsorted(self._cum, draws, side="right")
        np.minimum(picks, len(self._templates) - 1, out=picks)
        self._template_counts += np.bincount(picks, minlength=len(self._templates))
        who = self._customers(n)
        self._seen[who] = True
        templates, prefix, step, days = self._templates, self.prefix, self.ms_per_event, self._days
        day_prefix = self._day_prefix
        out: list[tuple[str, str, bytes]] = []
        append = out.append
        clock, number = self.clock_ms, self.produced
        for t, c in zip(picks.tolist(), who.tolist()):
            template = templates[t]
            number += 1
            clock += step
            form = template.ts_form
            if form == TS_EPOCH_MS:
                ts = b"%d" % clock
            else:
                local = clock + template.offset_ms
                day, rem = divmod(local, MS_PER_DAY)
                date = days.get(day) or day_prefix(day)
                seconds, millis = divmod(rem, 1000)
                hours, seconds = divmod(seconds, 3600)
                minutes, seconds = divmod(seconds, 60)
                if form == TS_LOCAL_S:
                    ts = b'"%sT%02d:%02d:%02d%s"' % (date, hours, minutes, seconds, template.suffix)
                else:
                    ts = b'"%sT%02d:%02d:%02d.%03d%s"' % (date, hours, minutes, seconds, millis, template.suffix)
            extra = template.extra
            if extra == EXTRA_NONE:
                value = template.fmt % (prefix, number, c, ts)
            elif extra == EXTRA_ORDER:
                value = template.fmt % (prefix, number, c, ts, prefix, number)
            else:
                value = template.fmt % (prefix, number, c, ts, c)
            append((template.role, f"c{c:07d}", value))
        self.clock_ms, self.produced = clock, number
        return out

    def records(self, n: int, chunk: int = 10_000) -> Iterator[tuple[str, str, bytes]]:
        """``n`` records, generated ``chunk`` at a time."""
        left = n
        while left > 0:
            yield from self.batch(min(chunk, left))
            left -= chunk

    def purchase_for(self, customer: str, amount: float = 42.0, currency: str = "USD") -> tuple[str, str, bytes]:
        """One purchase for an arbitrary customer id (latency probes), at the generator's current event time."""
        self.produced += 1
        self.clock_ms += self.ms_per_event
        event = {
            "event_id": f"{self.prefix.decode()}{self.produced}",
            "type": "purchase",
            "customer_id": customer,
            "ts": self.clock_ms,
            "source": "web",
            "order_id": f"o-{self.prefix.decode()}{self.produced}",
            "amount": amount,
            "currency": currency,
            "items": [{"product_id": "p-coffee-01", "category": "coffee", "price": amount, "quantity": 1}],
        }
        return "purchases", customer, orjson.dumps(event)

    def support_message_for(
        self, customer: str, text: str, *, ticket_id: str | None = None, extra: dict[str, Any] | None = None
    ) -> tuple[str, str, bytes]:
        """One inbound support message for an arbitrary customer (alert-latency probes: an angry text raises
        ``angry_customer``); ``extra`` fields ride along, as the contract carries unknown fields."""
        self.produced += 1
        self.clock_ms += self.ms_per_event
        event = {
            "event_id": f"{self.prefix.decode()}{self.produced}",
            "type": "support_message",
            "customer_id": customer,
            "ts": self.clock_ms,
            "source": "chat",
            "ticket_id": ticket_id or f"t-{customer}",
            "text": text,
            "direction": "inbound",
            "channel": "chat",
            **(extra or {}),
        }
        return "support", customer, orjson.dumps(event)

    @property
    def distinct_customers(self) -> int:
        """How many different customers the records so far carry."""
        return int(self._seen.sum())

    def type_counts(self) -> dict[str, int]:
        """Records so far per event type (``purchase_for`` probes excluded)."""
        counts: dict[str, int] = {}
        for template, count in zip(self._templates, self._template_counts.tolist()):
            counts[template.kind] = counts.get(template.kind, 0) + count
        return counts

    # -- internals ---------------------------------------------------------------------------

    def _customers(self, n: int) -> np.ndarray:
        if self._perm is None:
            return self._np.integers(0, self.customers, n)
        # Bounded power law, exponent 1: P(rank <= r) = ln(1 + r) / ln(1 + M).
        ranks = (np.exp(self._np.random(n) * math.log1p(self.customers)) - 1.0).astype(np.int64)
        np.clip(ranks, 0, self.customers - 1, out=ranks)
        return self._perm[ranks]

    def _day_prefix(self, day: int) -> bytes:
        text = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)).strftime("%Y-%m-%d").encode()
        self._days[day] = text
        return text


def _variants(kind: str) -> int:
    return 4 if kind == "identify" else VARIANTS_PER_TYPE


def _weighted(rng: Random, options: tuple[Any, ...], weights: tuple[float, ...]) -> Any:
    return rng.choices(options, weights=weights)[0]


def _build_templates(rng: Random) -> list[_Template]:
    """``VARIANTS_PER_TYPE`` templates per type, drawn once from the seed (values realistic, sizes ~250-450 bytes)."""
    categories = list(CATEGORIES)
    products = {c: [(f"p-{c}-{k:02d}", round(rng.uniform(*CATEGORIES[c][0]), 2)) for k in range(1, 7)] for c in categories}
    offsets = tuple(o[:2] for o in OFFSETS)
    offset_weights = tuple(o[2] for o in OFFSETS)
    texts_in = [t for group in (ANGRY, ANGRY_AGAIN, POLITE, PRESALES, THANKS) for lang in group.values() for t in lang]
    texts_out = [t for lang in AGENT.values() for t in lang]
    agents = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/129.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Version/18.0 Safari/605.1.15",
    )
    templates: list[_Template] = []

    def envelope(kind: str, source: str) -> dict[str, Any]:
        return {"event_id": "@EID@", "type": kind, "customer_id": "@CID@", "ts": "@TS@", "source": source}

    def clickstream(kind: str, fields: dict[str, Any]) -> None:
        app = rng.random() < 0.3  # the app stamps epoch ms, the web tracker local time
        event = envelope(kind, "app" if app else "web")
        event.update(fields)
        if app:
            event["device"] = {"os": rng.choice(("ios", "android")), "app_version": f"5.{rng.randrange(12)}.{rng.randrange(9)}"}
            templates.append(_Template(kind, event, TS_EPOCH_MS))
        else:
            event["session_id"] = f"s-{rng.getrandbits(40):010x}"
            event["user_agent"] = rng.choice(agents)
            suffix, minutes = _weighted(rng, offsets, offset_weights)
            templates.append(_Template(kind, event, TS_LOCAL_MS, minutes, suffix))

    def product() -> dict[str, Any]:
        category = rng.choice(categories)
        product_id, price = rng.choice(products[category])
        return {"product_id": product_id, "category": category, "price": price}

    for _ in range(VARIANTS_PER_TYPE):
        category = rng.choice(categories)
        url = rng.choice(("/", "/deals", f"/c/{category}", f"/p/{rng.choice(products[category])[0]}", "/account", "/help"))
        clickstream("page_view", {"url": url, "referrer": rng.choice(("https://www.google.com/", "", "/", "/deals"))})
        clickstream("product_view", product())
        clickstream("search", {"query": rng.choice(CATEGORIES[category][1]), "results": rng.randrange(0, 60)})
        clickstream("add_to_cart", {**product(), "quantity": rng.choice((1, 1, 1, 2, 3))})
        clickstream("remove_from_cart", {**product(), "quantity": 1})

        code, rate, _ = _weighted(rng, CURRENCIES, tuple(c[2] for c in CURRENCIES))
        items, cents = [], 0
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            item = product()
            quantity = rng.choice((1, 1, 2))
            price_cents = max(1, round(item["price"] * 100 / rate))
            cents += price_cents * quantity
            items.append({**item, "price": price_cents / 100, "quantity": quantity})
        event = envelope("purchase", rng.choice(("web", "web", "app", "store")))
        event.update(order_id="@OID@", amount=cents / 100, currency=code, items=items)
        templates.append(_Template("purchase", event, TS_UTC_MS))
        event = envelope("refund", "web")
        event.update(
            order_id="@OID@",
            amount=round(cents / 100 * rng.choice((0.3, 0.5, 1.0)), 2) or 0.01,
            currency=code,
            reason=rng.choice(REFUND_REASONS),
        )
        templates.append(_Template("refund", event, TS_UTC_MS))

        channel = rng.choice(("email", "chat"))
        suffix, minutes = _weighted(rng, offsets, offset_weights)
        inbound = rng.random() < 0.6
        event = envelope("support_message", channel)
        event.update(
            ticket_id="@TID@",
            text=rng.choice(texts_in if inbound else texts_out),
            direction="inbound" if inbound else "outbound",
            channel=channel,
        )
        templates.append(_Template("support_message", event, TS_LOCAL_S, minutes, suffix))
        event = envelope("ticket_opened", channel)
        event.update(
            ticket_id="@TID@", subject=rng.choice(("Question about my order", "Pre-sales question", "Problem with delivery"))
        )
        templates.append(_Template("ticket_opened", event, TS_LOCAL_S, minutes, suffix))
        event = envelope("ticket_closed", channel)
        event.update(ticket_id="@TID@", resolved=rng.random() < 0.8, csat=rng.randint(1, 5))
        templates.append(_Template("ticket_closed", event, TS_LOCAL_S, minutes, suffix))
        event = envelope("survey", "email")
        event.update(score=rng.randint(0, 10), comment=rng.choice(("quick and friendly", "terrible service", "很满意", "ok")))
        templates.append(_Template("survey", event, TS_LOCAL_S, minutes, suffix))

        event = envelope("consent", rng.choice(("web", "app")))
        event.update(
            marketing_email=rng.random() < 0.7,
            marketing_sms=rng.random() < 0.3,
            marketing_push=rng.random() < 0.5,
            contact_frequency=rng.choice(("normal", "normal", "low")),
        )
        templates.append(_Template("consent", event, TS_EPOCH_MS))
    for _ in range(_variants("identify")):
        event = envelope("identify", rng.choice(("web", "app")))
        event["anonymous_id"] = "@AID@"
        templates.append(_Template("identify", event, TS_EPOCH_MS))
    return templates
