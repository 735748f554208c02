"""The live customer profile: state, how each event type changes it, and its public view.

A profile is a plain dict of JSON types, so writing it to the store is one
``orjson.dumps`` and reading it back one ``loads`` (a blob per customer is ~3x
faster to persist than a field-per-hash layout; see docs/stack-costs.md).

Event time, not arrival order, drives everything that can be made
order-independent: decayed interest and sentiment are sums of
``weight * decay(reference - event_time)``, so a late event lands where it
belongs; purchase gaps come from a sorted list of purchase times; consent
keeps the newest statement by event time. ``apply`` is idempotent per
``event_id`` within the dedup window.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import orjson

from crm_stream.config.settings import EngineSettings, RuleSettings
from crm_stream.models.anger import lexicon as anger
from crm_stream.operators.events.schema import UTC_OFFSET
from crm_stream.operators.events.timeutil import MS_PER_DAY, MS_PER_HOUR

VERSION = 1
MAX_PURCHASE_TIMES = 32
MAX_ORDERS = 64
MAX_CART_ITEMS = 100
MAX_OPEN_TICKETS = 50
MAX_ANONYMOUS_IDS = 20
MAX_INTERESTS = 50
MAX_CATEGORY_TIMES = 8
MAX_TICKET_TIMES = 8
ANGER = "_anger"  # set on a support message while it is applied: its models.anger.lexicon.AngerScore
EPISODE_GAP_MS = 7 * MS_PER_DAY
MAX_LOOK_RUNS = 64  # per category: runs of looks not judged yet (rules/abandoned_interest.py drops those it judged)
CHANNELS = ("marketing_email", "marketing_sms", "marketing_push")
TIMER_HOURS = "timer_hours"  # hour buckets that may hold the customer's timer entries (erasure finds them there)

# Where an event came from, set by the router: input partition (or file) and offset (or line).
SOURCE = "_src"
SOURCE_OFFSET = "_off"

# How much each kind of attention counts towards a category's interest score.
INTEREST_WEIGHTS = {"product_view": 1.0, "add_to_cart": 3.0, "remove_from_cart": -1.0, "purchase": 5.0}


class ProfileRules:
    """The tunables ``apply`` needs, resolved once from settings (floats, not config lookups, on the hot path)."""

    __slots__ = ("interest_half_life_ms", "sentiment_half_life_ms", "dedup_max_ids", "episode_min_signals", "episode_window_ms")

    def __init__(
        self,
        interest_half_life_days: float,
        sentiment_half_life_hours: float,
        dedup_max_ids: int,
        *,
        episode_min_signals: int | None = None,
        episode_window_hours: float | None = None,
    ) -> None:
        self.interest_half_life_ms = interest_half_life_days * MS_PER_DAY
        self.sentiment_half_life_ms = sentiment_half_life_hours * MS_PER_HOUR
        self.dedup_max_ids = dedup_max_ids
        self.episode_min_signals = episode_min_signals
        """With ``episode_window_ms``: when an interest episode is due for judgment (rules/abandoned_interest.py)."""
        self.episode_window_ms = None if episode_window_hours is None else episode_window_hours * MS_PER_HOUR

    @classmethod
    def from_settings(cls, engine: EngineSettings, rules: RuleSettings | None = None) -> ProfileRules:
        return cls(
            engine.interest_half_life_days,
            engine.sentiment_half_life_hours,
            engine.dedup_max_ids,
            episode_min_signals=rules.abandoned_min_signals if rules else None,
            episode_window_hours=rules.abandoned_window_hours if rules else None,
        )


def _blank_profile() -> dict[str, Any]:
    return {
        "v": VERSION,
        "customer_id": "",
        "first_seen": 0,
        "last_seen": 0,
        "events": 0,
        "type_counts": {},
        "frequency": 0,
        "monetary": 0.0,
        "first_purchase_at": None,
        "last_purchase_at": None,
        "purchase_times": [],
        "gap_mean_days": None,
        "gap_std_days": None,
        "orders": {},
        "refunds": 0,
        "refund_amount": 0.0,
        "interests": {},
        "category_purchases": {},
        "cart": {},
        "tickets": {},
        "tickets_opened": 0,
        "tickets_closed": 0,
        "closed_tickets": {},
        "last_csat": None,
        "sentiment": [0.0, 0.0, 0],
        "last_message_sentiment": None,
        "nps": None,
        "consent": {
            "marketing_email": None,
            "marketing_sms": None,
            "marketing_push": None,
            "contact_frequency": "normal",
            "at": None,
        },
        "active_hours": [0] * 24,
        "segment": "prospect",
        "segment_since": 0,
        "segment_checked_at": 0,
        "segment_marks": [],  # the segment's inputs as of each purchase, until checked (operators/profile/segments.py)
        "anonymous_ids": [],
        "seen_ids": {},
        "offsets": {},
        "utc_offset_min": None,
        "utc_offset_at": None,  # the time of the event that wrote utc_offset_min
        "category_times": {},
        "looks": {},  # category -> sorted runs of looks [first, signals, last], cut into interest episodes by the rule
        "timers": {},
        "alerted": {},
        "sent": [],
        "scheduled": {},
        "escalations": {},
    }


# Defaults that cost nothing to share (immutable), and the containers a profile gets only when first touched.
_SCALAR_DEFAULTS: dict[str, Any] = {k: v for k, v in _blank_profile().items() if not isinstance(v, (dict, list))}
# The scalars a new profile carries from the start: those read for nearly every event. The rest (refunds,
# tickets, NPS, purchase dates...) are read through ``__missing__`` as their defaults until first set, so
# most customers' blobs, and the time to encode them, stay small.
_EAGER_SCALARS: dict[str, Any] = {
    k: _SCALAR_DEFAULTS[k]
    for k in (
        "v",
        "customer_id",
        "first_seen",
        "last_seen",
        "events",
        "frequency",
        "monetary",
        "gap_mean_days",
        "segment",
        "segment_since",
    )
}
_CONTAINER_BLANKS: dict[str, bytes] = {k: orjson.dumps(v) for k, v in _blank_profile().items() if isinstance(v, (dict, list))}
_NEW_CONTAINER: dict[str, Any] = {  # how each container is made on first touch (a blank copied: no shared state)
    key: dict if blank == b"{}" else list if blank == b"[]" else (lambda blank=blank: orjson.loads(blank))
    for key, blank in _CONTAINER_BLANKS.items()
}
_NEW_CONTAINER["active_hours"] = lambda: [0] * 24


class Profile(dict[str, Any]):
    """A profile dict that holds only what differs from a blank profile.

    Most customers in a stream are seen a handful of times (page views of one
    visit); a blank profile with all of its ~20 containers cost ~7 KB of
    memory, a ~1 KB blob and most of a new customer's time (allocating,
    encoding, then garbage-collection passes over every container). Reading a
    missing field gives its default; a missing container is created on first
    touch, so ``profile["cart"][sku] = ...`` works as on a full dict. Stored
    blobs are sparse too; ``stored_profile`` wraps a decoded one.
    """

    __slots__ = ()

    def __missing__(self, key: str) -> Any:
        make = _NEW_CONTAINER.get(key)
        if make is None:
            return _SCALAR_DEFAULTS[key]  # a scalar never set (or a blob written before the field existed)
        if key == "sentiment":  # decayed sum [value, weight, reference time]: referenced to the first sighting
            value: Any = [0.0, 0.0, self["first_seen"]]
        else:
            value = make()
        self[key] = value
        return value


def new_profile(customer_id: str, ts: int) -> Profile:
    # Hot scalars up front (a dict copy: reads of them never miss); other scalars and containers on first touch.
    profile = Profile(_EAGER_SCALARS)
    profile["customer_id"] = customer_id
    profile["first_seen"] = profile["last_seen"] = profile["segment_since"] = ts
    profile["offsets"], profile["seen_ids"], profile["type_counts"] = {}, {}, {}  # every first event touches these
    return profile


def stored_profile(stored: dict[str, Any]) -> Profile:
    """A profile as read back from a store (a plain dict from JSON, or the object a memory store kept)."""
    return stored if type(stored) is Profile else Profile(stored)


def full_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """Every field, defaults filled in: for people and exports, not for the hot path."""
    p = stored_profile(profile)
    return {key: p[key] for key in _blank_profile()} | dict(p)


def _decay(dt_ms: float, half_life_ms: float) -> float:
    return math.exp(-0.6931471805599453 * dt_ms / half_life_ms)


def add_decayed(cell: list[float], weight: float, ts: int, half_life_ms: float) -> None:
    """Add ``weight`` at time ``ts`` to a decayed sum stored as ``[value, reference_ts]``."""
    value, ref = cell
    if ts >= ref:
        cell[0] = value * _decay(ts - ref, half_life_ms) + weight
        cell[1] = ts
    else:  # a late event: its weight has already decayed by the time of the reference
        cell[0] = value + weight * _decay(ref - ts, half_life_ms)


def decayed_value(cell: list[float], as_of: int, half_life_ms: float) -> float:
    value, ref = cell
    return value * _decay(as_of - ref, half_life_ms) if as_of > ref else value


def seen_before(profile: Profile, event_id: str, ts: int, rules: ProfileRules) -> bool:
    """Record ``event_id``; True if it was already applied (a redelivery).

    The window is the customer's last ``dedup_max_ids`` events, by count, not by
    event time: partitions are read at different speeds, so a customer's newest
    event time can run far ahead of a redelivery that is still in flight.
    """
    seen = profile["seen_ids"]
    if event_id in seen:
        return True
    seen[event_id] = ts
    if len(seen) > rules.dedup_max_ids:
        del seen[next(iter(seen))]
    return False


def already_applied(profile: Profile, event: dict[str, Any]) -> bool:
    """Exactly-once across restarts: has this profile already applied this source position?

    Each input partition delivers a customer's events in order, so one offset
    per partition says everything. A restart re-reads from the last checkpoint;
    positions at or below the recorded one are skipped, however much event
    time they span (the event-id window could not promise that).
    """
    offset = event.get(SOURCE_OFFSET)
    if offset is None:
        return False
    offsets = profile["offsets"]
    source = event[SOURCE]
    if offsets.get(source, -1) >= offset:
        return True
    offsets[source] = offset
    return False


def apply(profile: Profile, event: dict[str, Any], rules: ProfileRules) -> bool:
    """Fold one decoded event into the profile. Returns False for a redelivered event (no change)."""
    ts: int = event["ts"]
    if already_applied(profile, event):
        return False
    if ts > profile["last_seen"]:
        profile["last_seen"] = ts
    if seen_before(profile, event["event_id"], ts, rules):
        return False
    if ts < profile["first_seen"]:
        profile["first_seen"] = ts
    kind = event["type"]
    profile["events"] += 1
    counts = profile["type_counts"]
    counts[kind] = counts.get(kind, 0) + 1
    anonymous_id = event.get("anonymous_id")
    if anonymous_id:
        link_anonymous_id(profile, anonymous_id)
    action, own_clock, handler = _PLAN.get(kind, _NO_PLAN)
    if action:
        profile["active_hours"][(ts // MS_PER_HOUR) % 24] += 1
    if own_clock:
        offset = event.get(UTC_OFFSET)
        # The newest offset the customer's own device wrote, by its own time: not "if this is the newest event",
        # which a purchase read ahead of the clickstream (live) made false for weeks of the customer's events.
        if offset is not None and ts >= (profile.get("utc_offset_at") or 0):
            profile["utc_offset_min"] = offset
            profile["utc_offset_at"] = ts
    if handler is not None:
        handler(profile, event, rules)
    return True


def link_anonymous_id(profile: Profile, anonymous_id: str) -> None:
    ids = profile["anonymous_ids"]
    if anonymous_id not in ids:
        ids.append(anonymous_id)
        del ids[:-MAX_ANONYMOUS_IDS]


def merge_visitor(profile: Profile, anonymous_id: str, released: list[dict[str, Any]], rules: ProfileRules) -> int | None:
    """Make a visitor's buffered events (released by identity stitching) the customer's; how many changed the
    profile, or None if this visitor was merged before (an identify replayed after a crash: its events are in)."""
    merged = profile.setdefault("merged_anonymous_ids", [])
    if anonymous_id in merged:
        return None
    merged.append(anonymous_id)
    link_anonymous_id(profile, anonymous_id)
    return sum(1 for earlier in released if apply(profile, earlier, rules))


def _interest(profile: Profile, category: str, weight: float, ts: int, rules: ProfileRules) -> None:
    interests = profile["interests"]
    cell = interests.get(category)
    if cell is None:
        if len(interests) >= MAX_INTERESTS:  # forget the weakest interest to stay bounded
            weakest = min(interests, key=lambda c: decayed_value(interests[c], ts, rules.interest_half_life_ms))
            del interests[weakest]
        cell = interests[category] = [0.0, ts]
    add_decayed(cell, weight, ts, rules.interest_half_life_ms)


def _episode(profile: Profile, category: str, ts: int, signals: int, rules: ProfileRules) -> None:
    """Log a look at a category (a view counts 1, a cart add 2).

    Interest episodes are cut from this log by the rule when its timer fires (rules/abandoned_interest.py), in
    time order, never as looks arrive: live, a customer's later looks (or a visitor's earlier ones, released by
    ``identify``) are often applied before the watermark reaches an earlier episode's deadline, and episodes built
    in arrival order began and ended elsewhere than in time order. The log holds runs ``[first, signals, last]``
    of looks no more than the rule's window apart, sorted: an episode is never cut inside a run (only a longer
    silence ends one), and the runs are the same whatever order the looks came in.

    >>> p = new_profile("c1", 0)
    >>> rules = ProfileRules(14, 72, 64, episode_min_signals=8, episode_window_hours=48)
    >>> for hour, signals in ((80, 1), (0, 2), (40, 1)):  # read out of order: the hour-40 look joins both
    ...     _episode(p, "books", hour * MS_PER_HOUR, signals, rules)
    >>> [[first // MS_PER_HOUR, n, last // MS_PER_HOUR] for first, n, last in p["looks"]["books"]]
    [[0, 4, 80]]
    """
    looks = profile["looks"]
    runs = looks.get(category)
    if runs is None:
        if len(looks) >= MAX_INTERESTS:  # forget the category looked at least recently
            del looks[min(looks, key=lambda c: (looks[c][-1][2], c))]
        runs = looks[category] = []
    window = rules.episode_window_ms or 0
    i = bisect.bisect_right([run[0] for run in runs], ts)
    left = runs[i - 1] if i else None
    right = runs[i] if i < len(runs) else None
    if left is not None and ts <= left[2] + window:
        left[1] += signals
        left[2] = max(left[2], ts)
        if right is not None and right[0] <= left[2] + window:  # the look bridged two runs
            left[1] += right[1]
            left[2] = max(left[2], right[2])
            del runs[i]
    elif right is not None and right[0] <= ts + window:
        right[0] = ts
        right[1] += signals
    else:
        runs.insert(i, [ts, signals, ts])
        if len(runs) > MAX_LOOK_RUNS:
            del runs[0]


def interest_looks(profile: dict[str, Any]) -> dict[str, list[list[int]]]:
    """The profile's look log (category -> sorted runs ``[first, signals, last]``); a profile stored before the
    log existed has its pending episodes (the same three numbers) taken as runs.

    >>> p = new_profile("c1", 0)
    >>> p["episodes"] = {"books": [5, 9, 7]}
    >>> interest_looks(p), "episodes" in p
    ({'books': [[5, 9, 7]]}, False)
    """
    old = [profile.pop(key, None) for key in ("episodes", "closed_episodes")]
    if any(old):
        looks = profile["looks"]
        episodes = [(c, e) for c, e in (old[0] or {}).items()] + [(c, e) for c, es in (old[1] or {}).items() for e in es]
        for category, episode in episodes:
            bisect.insort(looks.setdefault(category, []), list(episode))
    return profile.get("looks") or {}


def _on_view(profile: Profile, event: dict[str, Any], rules: ProfileRules) -> None:
    _interest(profile, event["category"], INTEREST_WEIGHTS["product_view"], event["ts"], rules)
    _episode(profile, event["category"], event["ts"], 1, rules)


def _on_add_to_cart(profile: Profile, event: dict[str, Any], rules: ProfileRules) -> None:
    cart = profile["cart"]
    item = cart.get(event["product_id"])
    if item is None:
        if len(cart) >= MAX_CART_ITEMS:
            del cart[next(iter(cart))]
        item = cart[event["product_id"]] = {
            "category": event["category"],
            "price": event.get("price"),
            "quantity": 0,
            "added_at": event["ts"],
        }
    item["quantity"] += event["quantity"]
    if event.get("price") is not None:
        item["price"] = event["price"]
    _interest(profile, event["category"], INTEREST_WEIGHTS["add_to_cart"], event["ts"], rules)
    _episode(profile, event["category"], event["ts"], 2, rules)


def _on_remove_from_cart(profile: Profile, event: dict[str, Any], rules: ProfileRules) -> None:
    item = profile["cart"].get(event["product_id"])
    if item is not None:
        item["quantity"] -= event["quantity"]
        if item["quantity"] <= 0:
            del profile["cart"][event["product_id"]]
    _interest(profile, event["category"], INTEREST_WEIGHTS["remove_from_cart"], event["ts"], rules)


def _on_purchase(profile: Profile, event: dict[str, Any], rules: ProfileRules) -> None:
    ts = event["ts"]
    orders = profile["orders"]
    if event["order_id"] in orders:
        return  # the same order sent twice under two event ids: count it once
    items = event.get("items") or []
    orders[event["order_id"]] = [event["amount_base"], sorted({i["product_id"] for i in items})]
    if len(orders) > MAX_ORDERS:
        del orders[next(iter(orders))]
    profile["frequency"] += 1
    profile["monetary"] = round(profile["monetary"] + event["amount_base"], 6)
    if profile["first_purchase_at"] is None or ts < profile["first_purchase_at"]:
        profile["first_purchase_at"] = ts
    if profile["last_purchase_at"] is None or ts > profile["last_purchase_at"]:
        profile["last_purchase_at"] = ts
    times = profile["purchase_times"]
    bisect.insort(times, ts)
    del times[:-MAX_PURCHASE_TIMES]
    gaps = [(b - a) / MS_PER_DAY for a, b in zip(times, times[1:])]
    if gaps:
        mean = sum(gaps) / len(gaps)
        profile["gap_mean_days"] = round(mean, 6)
        profile["gap_std_days"] = round(math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)), 6)
    bought = profile["category_purchases"]
    for category in sorted({i["category"] for i in items}):
        record = bought.setdefault(category, [0, ts])
        record[0] += 1
        record[1] = max(record[1], ts)
        cat_times = profile["category_times"].setdefault(category, [])
        bisect.insort(cat_times, ts)
        del cat_times[:-MAX_CATEGORY_TIMES]
    for item in items:
        _interest(profile, item["category"], INTEREST_WEIGHTS["purchase"], ts, rules)
        profile["cart"].pop(item["product_id"], None)
    if not items:
        profile["cart"].clear()  # an order without line items: assume the cart was checked out


def purchases_as_of(profile: Profile, as_of: int) -> Profile:
    """The profile with its purchase history as it stood at ``as_of``: itself when no later purchase was applied,
    else a copy without the later ones (count, first and last, kept times, gaps). Live, a purchases partition is
    read ahead of the watermark, so a check in event time often finds purchases from after it; a model served the
    profile as it is would see a customer who has not yet bought as one who just did (lifetime value and
    category times still count them: they are not kept by time).

    >>> p = new_profile("c1", 0)
    >>> p.update(frequency=3, first_purchase_at=0, last_purchase_at=30 * MS_PER_DAY, gap_mean_days=15.0)
    >>> p["purchase_times"] = [0, 10 * MS_PER_DAY, 30 * MS_PER_DAY]
    >>> then = purchases_as_of(p, 20 * MS_PER_DAY)
    >>> then["frequency"], then["last_purchase_at"] // MS_PER_DAY, then["gap_mean_days"], p["frequency"]
    (2, 10, 10.0, 3)
    """
    times = profile.get("purchase_times") or ()
    kept = bisect.bisect_right(times, as_of)
    if kept == len(times):
        return profile
    view = Profile(profile)
    view["purchase_times"] = list(times[:kept])
    view["frequency"] = max(0, profile["frequency"] - (len(times) - kept))
    view["last_purchase_at"] = times[kept - 1] if kept else None
    if not kept and view["frequency"] == 0:
        view["first_purchase_at"] = None
    gaps = [(b - a) / MS_PER_DAY for a, b in zip(times[:kept], times[1:kept])]
    if gaps:
        mean = sum(gaps) / len(gaps)
        view["gap_mean_days"] = round(mean, 6)
        view["gap_std_days"] = round(math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)), 6)
    else:
        view["gap_mean_days"] = view["gap_std_days"] = None
    return view


def _on_refund(profile: Profile, event: dict[str, Any], rules: ProfileRules) -> None:
    profile["refunds"] += 1
    profile["refund_amount"] = round(profile["refund_amount"] + event["amount_base"], 6)
    profile["monetary"] = round(max(0.0, profile["monetary"] - event["amount_base"]), 6)


def _ticket(profile: Profile, ticket_id: str, ts: int) -> dict[str, Any]:
    tickets = profile["tickets"]
    ticket = tickets.get(ticket_id)
    if ticket is None:
        if len(tickets) >= MAX_OPEN_TICKETS:
            del tickets[next(iter(tickets))]
        ticket = tickets[ticket_id] = {"opened_at": ts, "inbound": 0, "last_inbound_at": None}
    return ticket


def _on_ticket_opened(profile: Profile, event: dict[str, Any], rules: ProfileRules) -> None:
    profile["tickets_opened"] += 1
    _ticket(profile, event["ticket_id"], event["ts"])


def _on_support_message(profile: Profile, event: dict[str, Any], rules: ProfileRules) -> None:
    ticket = _ticket(profile, event["ticket_id"], event["ts"])
    if event["direction"] != "inbound":
        return
    ticket["inbound"] += 1
    ticket["last_inbound_at"] = max(ticket["last_inbound_at"] or 0, event["ts"])
    times = ticket.setdefault("inbound_times", [])
    bisect.insort(times, event["ts"])
    del times[:-MAX_TICKET_TIMES]
    if event["ticket_id"] in profile["closed_tickets"]:
        ticket["reopened"] = True  # writing again on a closed ticket: it was not solved
    scored = anger.score_message(event["text"])
    event[ANGER] = scored  # the rules read it; scored once per message
    score = scored.sentiment
    profile["last_message_sentiment"] = round(score, 6)
    num, den, ref = profile["sentiment"]
    cell_num, cell_den = [num, ref], [den, ref]
    add_decayed(cell_num, score, event["ts"], rules.sentiment_half_life_ms)
    add_decayed(cell_den, 1.0, event["ts"], rules.sentiment_half_life_ms)
    profile["sentiment"] = [cell_num[0], cell_den[0], cell_num[1]]


def _on_ticket_closed(profile: Profile, event: dict[str, Any], rules: ProfileRules) -> None:
    if profile["tickets"].pop(event["ticket_id"], None) is not None:
        profile["tickets_closed"] += 1
    closed = profile["closed_tickets"]
    closed[event["ticket_id"]] = bool(event.get("resolved", True))
    if len(closed) > MAX_OPEN_TICKETS:
        del closed[next(iter(closed))]
    if event.get("csat") is not None:
        profile["last_csat"] = event["csat"]


def _on_survey(profile: Profile, event: dict[str, Any], rules: ProfileRules) -> None:
    profile["nps"] = event["score"]


def _on_consent(profile: Profile, event: dict[str, Any], rules: ProfileRules) -> None:
    consent = profile["consent"]
    if consent["at"] is not None and event["ts"] < consent["at"]:
        return  # an older statement arriving late never overrides a newer one
    consent["at"] = event["ts"]
    for channel in CHANNELS:
        if event.get(channel) is not None:
            consent[channel] = event[channel]
    if event.get("contact_frequency") is not None:
        consent["contact_frequency"] = event["contact_frequency"]


_HANDLERS = {
    "product_view": _on_view,
    "add_to_cart": _on_add_to_cart,
    "remove_from_cart": _on_remove_from_cart,
    "purchase": _on_purchase,
    "refund": _on_refund,
    "ticket_opened": _on_ticket_opened,
    "support_message": _on_support_message,
    "ticket_closed": _on_ticket_closed,
    "survey": _on_survey,
    "consent": _on_consent,
}
# Events whose time was written by the customer's own device (not an agent's or a back office's).
_CUSTOMER_CLOCKS = frozenset(
    ("page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "purchase", "survey", "consent", "identify")
)
# What counts towards a customer's active hours: things the customer did themself.
_CUSTOMER_ACTIONS = frozenset(
    ("page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "purchase", "survey", "support_message")
)
# Per event type, what ``apply`` does beyond the common part: (active hours?, customer's clock?, handler): one lookup.
_PLAN: dict[str, tuple[bool, bool, Any]] = {
    kind: (kind in _CUSTOMER_ACTIONS, kind in _CUSTOMER_CLOCKS, _HANDLERS.get(kind))
    for kind in _CUSTOMER_ACTIONS | _CUSTOMER_CLOCKS | _HANDLERS.keys()
}
_NO_PLAN: tuple[bool, bool, Any] = (False, False, None)


def sentiment_value(profile: Profile, as_of: int, rules: ProfileRules) -> float | None:
    num, den, ref = profile["sentiment"]
    if den <= 0:
        return None
    return num / den  # both decay alike, so the ratio is the decayed mean at any time


def top_interests(profile: Profile, as_of: int, rules: ProfileRules, limit: int = 5) -> list[tuple[str, float]]:
    scored = [(cat, decayed_value(cell, as_of, rules.interest_half_life_ms)) for cat, cell in profile["interests"].items()]
    scored = [(c, s) for c, s in scored if s > 0.01]
    scored.sort(key=lambda cs: (-cs[1], cs[0]))
    return [(c, round(s, 4)) for c, s in scored[:limit]]
