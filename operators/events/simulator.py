"""A simulated shop: contract events from customers with known habits, plus the truth behind them.

The engine is judged against what the simulator *decided* (who is a lapsing
customer and when they churned, which product has a return spike, ...), so
``truth()`` is written from the simulation's own parameters, never re-derived
from the events.

Memory stays flat in the number of events: each customer is one packed integer
in a heap of pending work, and a customer's profile is re-derived from the seed
whenever one of their sessions runs (~15 µs, far less memory than a million profiles).
A session pushes its events, and any later consequences (ticket replies,
refunds), into the same heap, which therefore yields everything in event-time
order. Everything draws from ``random.Random`` seeded from ``settings.seed``:
the same settings give the same bytes.

>>> shop = Shop(SimulatorSettings(customers=6, days=30, seed=1))
>>> sorted(line["persona"] for line in shop.customers()) == sorted(PERSONAS)
True
>>> list(shop.records()) == list(shop.records())  # same seed, same bytes
True
"""

from __future__ import annotations

import bisect
import collections
import copy
import hashlib
import heapq
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any, NamedTuple, TypeVar

from crm_stream.config.settings import SimulatorSettings
from crm_stream.operators.events.schema import TOPIC_OF_TYPE
from crm_stream.operators.events.timeutil import MS_PER_DAY, MS_PER_HOUR, parse_ts, to_rfc3339
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import Raw

PERSONAS = ("loyal", "bargain_hunter", "lapsing", "browser", "angry", "replenishment")
PERSONA_WEIGHTS = (22, 16, 16, 14, 12, 20)
PERSONA_CUM = list(itertools.accumulate(PERSONA_WEIGHTS))
DEFAULT_CURRENCY_RATES = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "CNY": 0.138, "JPY": 0.0066, "CAD": 0.73}

# category -> (USD price range, search queries)
CATEGORIES: dict[str, tuple[tuple[int, int], tuple[str, ...]]] = {
    "coffee": ((8, 25), ("dark roast coffee", "espresso beans", "decaf", "咖啡豆")),
    "tea": ((6, 30), ("green tea", "oolong", "earl grey", "普洱茶")),
    "electronics": ((25, 400), ("wireless earbuds", "usb-c charger", "bluetooth speaker", "耳机")),
    "books": ((8, 40), ("mystery novel", "cookbook", "python programming", "小说")),
    "beauty": ((10, 80), ("face cream", "sunscreen spf 50", "shampoo", "面膜")),
    "toys": ((10, 60), ("lego", "puzzle 1000 pieces", "plush bear", "积木")),
    "pet_food": ((15, 70), ("dry cat food", "puppy food", "grain free dog food", "猫粮")),
    "clothing": ((15, 120), ("rain jacket", "running shoes", "wool socks", "卫衣")),
}
CATEGORY_NAMES = tuple(CATEGORIES)
REPLENISHABLE = ("coffee", "pet_food", "tea", "beauty")
PRODUCTS_PER_CATEGORY = 6
# Zones without daylight saving, so a fixed offset is true all year: (name, minutes east of UTC, weight).
TIMEZONES = (
    ("UTC", 0, 10),
    ("Asia/Shanghai", 480, 20),
    ("America/Bogota", -300, 20),
    ("America/Sao_Paulo", -180, 10),
    ("Africa/Lagos", 60, 10),
    ("Asia/Tokyo", 540, 10),
    ("Asia/Kolkata", 330, 10),
    ("Asia/Dubai", 240, 10),
)
TIMEZONE_CUM = list(itertools.accumulate(w for _, _, w in TIMEZONES))
# Local hour around which a customer is active, and its spread (hours).
ACTIVE_HOURS = ((8.0, 1.5), (12.5, 2.0), (20.0, 2.0), (23.0, 1.5))

ANGRY = {
    "en": (
        "WHERE IS MY ORDER??? Two weeks and nothing!!!",
        "Your product broke after one day. I want my money back NOW!!!",
        "Worst service ever. Completely unacceptable!!!",
        "The package arrived damaged AGAIN. Fix this!!!",
    ),
    "zh": (
        "这破玩意儿真难用!!!",
        "太差劲了,马上给我退款!!!",
        "说好的三天到货,现在都一周了!!!",
        "东西又坏了,你们到底怎么做质检的?!",
    ),
}
ANGRY_AGAIN = {
    "en": (
        "This is the third time I'm asking, unacceptable!!!",
        "I wrote hours ago and NOBODY answered!!!",
        "Still waiting. Is anyone even reading this?!",
        "STOP ignoring me and fix it!!!",
    ),
    "zh": ("我已经问了三次了,到底有没有人管?!", "几个小时了还没人回复,太离谱了!!!", "再不处理我就投诉你们!!!"),
}
POLITE = {
    "en": (
        "Hi, could you tell me when my order ships? Thanks",
        "Hello, can I change the delivery address for my order? Thank you!",
        "Hi! Does this come in a larger size? Thanks a lot",
        "Could you send me the invoice for my last order, please?",
    ),
    "zh": (
        "你好,请问我的订单什么时候发货?谢谢",
        "您好,可以帮我改一下收货地址吗?谢谢!",
        "请问这个有大号的吗?谢谢",
        "麻烦开一下上个订单的发票,谢谢。",
    ),
}
PRESALES = {
    "en": ("Hi, do you ship to Canada? Thanks", "Hello! When does the summer sale start?"),
    "zh": ("请问这个多久能到货?谢谢", "你好,请问什么时候有促销活动?"),
}
THANKS = {"en": ("Great, thanks for the quick help!", "Perfect, thank you!"), "zh": ("好的,谢谢!", "收到了,谢谢你们的帮助!")}
AGENT = {
    "en": (
        "Hi, thanks for reaching out. I've checked your order and it ships tomorrow.",
        "Sorry for the trouble, I've escalated this to our logistics team.",
    ),
    "zh": ("您好,您的订单明天发货,感谢耐心等待。", "非常抱歉给您带来不便,我们已经加急处理。"),
}
AGENT_PRESALES = {"en": ("Hi! Yes, we do. Delivery takes 5-7 days.",), "zh": ("您好,可以的,大约5到7天送达。",)}
REFUND_REASONS = ("damaged", "not as described", "changed my mind", "late delivery")
SPIKE_REASON = "defective: stopped working after a few days"


class Habits(NamedTuple):
    """How a persona behaves; gaps in days, probabilities per session or per purchase."""

    visit_gap: float
    buy_gap: tuple[float, float] | None
    views: tuple[int, int]
    search_p: float
    cart_p: float
    items: tuple[int, int]
    tier: str | None  # "cheap" / "premium" / None: which half of a category's price range they pick from
    ticket_p: float  # a purchase leads to a ticket
    refund_p: float
    question_p: float  # a non-buying session leads to a pre-sales question


HABITS = {
    "loyal": Habits(4.0, (10, 25), (1, 3), 0.3, 0.05, (1, 4), "premium", 0.05, 0.03, 0.01),
    "bargain_hunter": Habits(2.0, (45, 90), (3, 7), 0.7, 0.35, (1, 1), "cheap", 0.04, 0.05, 0.01),
    "lapsing": Habits(5.0, (10, 20), (1, 3), 0.3, 0.05, (1, 3), None, 0.05, 0.03, 0.01),
    "browser": Habits(3.0, None, (2, 5), 0.5, 0.3, (1, 1), None, 0.0, 0.0, 0.03),
    "angry": Habits(6.0, (15, 35), (1, 3), 0.3, 0.05, (1, 3), None, 0.6, 0.3, 0.0),
    "replenishment": Habits(9.0, None, (0, 2), 0.2, 0.02, (1, 1), None, 0.04, 0.02, 0.01),
}

# Session-state flags, packed with the customer index into one int per customer (see _pack).
BUY, IDENTIFIED, CONSENTED, WON_BACK, INTEREST = 1, 2, 4, 8, 16  # INTEREST << category index
SECOND = 1000
_EPOCH = datetime(1970, 1, 1)
T = TypeVar("T")


class Product(NamedTuple):
    product_id: str
    category: str
    price: float  # list price in USD


class Profile:
    """What the simulator decided about one customer; re-derived from the seed on demand."""

    customer_id: str
    persona: str
    habits: Any
    timezone: str
    offset_ms: int
    offset_str: str
    peak_hour: float
    hour_spread: float
    app: bool
    currency: str
    language: str
    favourites: tuple[str, ...]
    anonymous_id: str | None
    identify_at: int | None
    consent: dict[str, Any] | None
    churned_at: int | None
    cycle_days: int | None
    cycle_product: Any
    first_visit_at: int
    first_buy_at: int | None

    __slots__ = (
        "customer_id",
        "persona",
        "habits",
        "timezone",
        "offset_ms",
        "offset_str",
        "peak_hour",
        "hour_spread",
        "app",
        "currency",
        "language",
        "favourites",
        "anonymous_id",
        "identify_at",
        "consent",
        "churned_at",
        "cycle_days",
        "cycle_product",
        "first_visit_at",
        "first_buy_at",
    )

    def truth(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "kind": "customer",
            "customer_id": self.customer_id,
            "persona": self.persona,
            "timezone": self.timezone,
            "utc_offset": self.offset_str,
            "currency": self.currency,
            "language": self.language,
            "categories": list(self.favourites),
            "consent": self.consent,
            "churned_at": to_rfc3339(self.churned_at) if self.churned_at is not None else None,
        }
        if self.anonymous_id:
            line["anonymous_id"] = self.anonymous_id
            line["identify_after"] = to_rfc3339(self.identify_at)  # type: ignore[arg-type]  # set with anonymous_id  # at their first visit from then on
        if self.cycle_days:
            line.update(
                cycle_days=self.cycle_days,
                cycle_category=self.cycle_product.category,
                cycle_product=self.cycle_product.product_id,
            )
        return line


class Shop:
    """The catalogue and customers for ``settings``; every method starts a fresh, identical simulation.

    ``currency_rates`` (units of USD per unit) limits which currencies orders use (USD, EUR, CNY when
    present); ``duplicate_rate`` is the chance that an event is delivered twice.
    """

    COUNT_KEYS = ("customers", "events", "duplicates", "malformed", "records", "situations")

    def __init__(
        self,
        settings: SimulatorSettings | None = None,
        *,
        currency_rates: Mapping[str, float] | None = None,
        duplicate_rate: float = 0.005,
    ) -> None:
        self.settings = s = settings or SimulatorSettings()
        if s.customers <= 0 or s.days <= 0:
            raise ValueError(f"simulator needs customers > 0 and days > 0, got {s.customers} and {s.days}")
        if not 0.0 <= s.bad_rate < 1.0 or not 0.0 <= s.anonymous_share <= 1.0 or not 0.0 <= duplicate_rate < 1.0:
            raise ValueError("simulator bad_rate and duplicate_rate must be in [0, 1), anonymous_share in [0, 1]")
        self.currency_rates = dict(currency_rates or DEFAULT_CURRENCY_RATES)
        mix = [(c, w) for c, w in (("USD", 80), ("EUR", 12), ("CNY", 8)) if c in self.currency_rates]
        self.currencies = [c for c, _ in mix]
        self._currency_cum = list(itertools.accumulate(w for _, w in mix))
        if not self.currencies:
            raise ValueError(f"currency_rates {sorted(self.currency_rates)} need at least one of USD, EUR, CNY")
        self.duplicate_rate = duplicate_rate
        self.start_ms = parse_ts(s.start) // SECOND * SECOND
        self.end_ms = self.start_ms + s.days * MS_PER_DAY
        # Customers appear over the first two weeks (or quarter of a short period), in id order.
        self.arrival_window_ms = min(14 * MS_PER_DAY, s.days * MS_PER_DAY // 4)
        self._seed_key = int.from_bytes(hashlib.sha256(f"crm-stream/{s.seed}".encode()).digest()[:8], "big")
        self._id_prefix = f"ev{s.seed}-"
        rng = Random(self._key(0, 0) ^ 0xCA7)
        self.products: list[Product] = []
        for category, ((low, high), _) in CATEGORIES.items():
            prices = sorted(round(rng.uniform(low, high), 2) for _ in range(PRODUCTS_PER_CATEGORY))
            items = [Product(f"p-{category}-{k + 1:02d}", category, price) for k, price in enumerate(prices)]
            self.products += items
        electronics = [p for p in self.products if p.category == "electronics"]
        self.spike_product = rng.choice(electronics[1:-1])  # mid-priced: bought often enough to show
        self.spike_at = self.start_ms + int(s.days * MS_PER_DAY * rng.uniform(0.45, 0.55)) // SECOND * SECOND
        self._choices: dict[tuple[str, str | None], tuple[list[Product], list[float]]] = {}
        for category in CATEGORIES:
            items = [p for p in self.products if p.category == category]
            half = len(items) // 2
            for tier, chosen in ((None, items), ("cheap", items[:half]), ("premium", items[half:])):
                # The spike product is a best seller, so its returns stand out from noise.
                weights = itertools.accumulate(6.0 if p == self.spike_product else 1.0 for p in chosen)
                self._choices[category, tier] = (chosen, list(weights))

    # -- public API -------------------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        """Contract events in event-time order (duplicates included, malformed never)."""
        return _Run(self, None).events()

    def records(self) -> Iterator[tuple[str, str, bytes]]:
        """(topic role, Kafka key, JSON value) in time order, malformed records interleaved at ``bad_rate``."""
        return self._records(_Run(self, None))

    def truth(self) -> Iterator[dict[str, Any]]:
        """Ground truth lines in the order they were decided, then one ``summary`` line of counts."""
        pending: collections.deque[dict[str, Any]] = collections.deque()
        run = _Run(self, pending.append)
        for _ in self._records(run):
            while pending:
                yield pending.popleft()
        yield from pending
        yield {"kind": "summary", **run.counts}

    def customers(self) -> Iterator[dict[str, Any]]:
        """The ``customer`` truth lines alone, without simulating any events (cheap)."""
        return (self.profile(i).truth() for i in range(self.settings.customers))

    def write_files(self, events_path: str | Path, truth_path: str | Path | None = None) -> dict[str, int]:
        """Write record values as JSON lines (malformed included) and, optionally, the truth; return counts."""
        truth_file = open(truth_path, "wb") if truth_path is not None else None
        try:
            run = _Run(self, (lambda line: truth_file.write(jsonutil.dumps_line(line))) if truth_file else None)
            with open(events_path, "wb") as out:
                for _, _, value in self._records(run):
                    out.write(value + b"\n")
            if truth_file:
                truth_file.write(jsonutil.dumps_line({"kind": "summary", **run.counts}))
        finally:
            if truth_file:
                truth_file.close()
        return dict(run.counts)

    def profile(self, index: int) -> Profile:
        """Customer ``index``'s habits: a pure function of the seed and the index."""
        rng = Random(self._key(index, 0))
        p = Profile()
        p.customer_id = f"c{index:07d}"
        # The first customers take one persona each, so every persona shows up even in a tiny shop.
        p.persona = PERSONAS[index] if index < len(PERSONAS) else _weighted(rng, PERSONAS, PERSONA_CUM)
        p.habits = HABITS[p.persona]
        p.timezone, offset_min, _ = _weighted(rng, TIMEZONES, TIMEZONE_CUM)
        p.offset_ms = offset_min * 60_000
        sign, minutes = ("+" if offset_min >= 0 else "-"), abs(offset_min)
        p.offset_str = "Z" if offset_min == 0 else f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
        p.peak_hour, p.hour_spread = rng.choice(ACTIVE_HOURS)
        p.app = rng.random() < 0.2
        china = p.timezone == "Asia/Shanghai"
        p.language = "zh" if rng.random() < (0.85 if china else 0.12) else "en"
        if china and "CNY" in self.currency_rates and rng.random() < 0.6:
            p.currency = "CNY"
        else:
            p.currency = _weighted(rng, self.currencies, self._currency_cum)
        first = rng.randrange(len(CATEGORY_NAMES))
        second = (first + 1 + rng.randrange(len(CATEGORY_NAMES) - 1)) % len(CATEGORY_NAMES)
        only_one = p.persona == "browser" and rng.random() < 0.5
        p.favourites = (CATEGORY_NAMES[first],) if only_one else (CATEGORY_NAMES[first], CATEGORY_NAMES[second])
        p.consent = None
        if rng.random() < 0.85:
            p.consent = {
                "marketing_email": rng.random() < 0.7,
                "marketing_sms": rng.random() < 0.3,
                "marketing_push": rng.random() < 0.5,
                "contact_frequency": "low" if rng.random() < 0.2 else "normal",
            }
        p.first_visit_at = self.snap(p, rng, self._arrival(index))
        p.anonymous_id, p.identify_at = None, None
        if rng.random() < self.settings.anonymous_share:
            p.anonymous_id = f"anon-{rng.getrandbits(48):012x}"
            p.identify_at = p.first_visit_at + int(rng.uniform(1, 14) * MS_PER_DAY) // SECOND * SECOND
        p.churned_at, p.cycle_days, p.cycle_product, p.first_buy_at = None, None, None, None
        if p.persona == "lapsing":
            span = self.end_ms - p.first_visit_at
            p.churned_at = p.first_visit_at + int(span * rng.uniform(0.3, 0.6)) // SECOND * SECOND
        if p.persona == "replenishment":
            p.cycle_days = rng.choice((21, 30))
            category = rng.choice(REPLENISHABLE)
            p.favourites = (category,) + tuple(c for c in p.favourites if c != category)[:1]
            p.cycle_product = rng.choice([q for q in self.products if q.category == category])
            first_gap: float | None = rng.uniform(0, p.cycle_days)
        else:
            first_gap = rng.uniform(0, p.habits.buy_gap[1]) if p.habits.buy_gap else None
        if first_gap is not None:
            first_buy = max(p.first_visit_at + int(first_gap * MS_PER_DAY), p.identify_at or 0)
            p.first_buy_at = self.snap(p, rng, first_buy)
        return p

    def snap(self, p: Profile, rng: Random, at: int) -> int:
        """The first moment at or after ``at`` that falls in the customer's usual local hours."""
        local = at + p.offset_ms
        hour = rng.uniform(0, 24) if rng.random() < 0.1 else (p.peak_hour + rng.gauss(0, p.hour_spread)) % 24
        when = local - local % MS_PER_DAY + int(hour * 3600) * SECOND - p.offset_ms
        return when if when >= at else when + MS_PER_DAY

    def pick_product(self, rng: Random, category: str, tier: str | None) -> Product:
        items, weights = self._choices[category, tier]
        return _weighted(rng, items, weights)

    # -- internals ---------------------------------------------------------------------------

    def _key(self, index: int, session: int) -> int:
        """A distinct Random seed per (customer, session): sessions replay without stored RNG state."""
        return (self._seed_key << 64) | (index << 24) | session

    def _records(self, run: _Run) -> Iterator[tuple[str, str, bytes]]:
        bad_rate = self.settings.bad_rate
        bad_rng = Random(self._key(0, 0) ^ 0xBAD)
        counts = run.counts
        for event in run.events():
            role = TOPIC_OF_TYPE[event["type"]]
            key = event.get("customer_id") or event["anonymous_id"]
            counts["records"] += 1
            yield role, key, jsonutil.dumps(event)
            # Geometric number of insertions after each good record, so malformed/all == bad_rate.
            while bad_rate and bad_rng.random() < bad_rate:
                counts["records"] += 1
                counts["malformed"] += 1
                yield _malformed(bad_rng, event, role, key)

    def _arrival(self, index: int) -> int:
        return self.start_ms + self.arrival_window_ms * (2 * index + 1) // (2 * self.settings.customers)


CATEGORY_CUM_WEIGHTS = list(itertools.accumulate(3.0 if c == "electronics" else 1.0 for c in CATEGORY_NAMES))


def _pack(index: int, session: int, next_buy: int | None, flags: int) -> int:
    """A waiting customer as one int (index, session number, next purchase time, flags): ~40 bytes each."""
    return index | session << 32 | (next_buy or 0) << 56 | flags << 104


def _unpack(state: int) -> tuple[int, int, int | None, int]:
    return state & 0xFFFFFFFF, (state >> 32) & 0xFFFFFF, ((state >> 56) & 0xFFFFFFFFFFFF) or None, state >> 104


def _weighted(rng: Random, items: Sequence[T], cum_weights: Sequence[float]) -> T:
    """``rng.choices(items, cum_weights=...)[0]`` at a third of the cost: this is the hot path."""
    return items[bisect.bisect(cum_weights, rng.random() * cum_weights[-1])]


def _step(rng: Random) -> int:
    return rng.randint(10, 150) * SECOND


class _Run:
    """One pass of the simulation: a heap of pending events (dicts) and customer sessions (ints)."""

    def __init__(self, shop: Shop, sink: Callable[[dict[str, Any]], Any] | None) -> None:
        self.shop = shop
        self.sink = sink
        self.heap: list[tuple[int, int, Any]] = []
        self.seq = itertools.count()
        self.event_no = 0
        self.counts = dict.fromkeys(Shop.COUNT_KEYS, 0)

    def events(self) -> Iterator[dict[str, Any]]:
        shop, heap, total = self.shop, self.heap, self.shop.settings.customers
        dup_rng = Random(shop._key(0, 0) ^ 0xD0B)
        spike = shop.spike_product
        self.situation("return_spike", shop.spike_at, None, product_id=spike.product_id, category=spike.category)
        arrived, next_arrival = 0, shop._arrival(0)
        while True:
            # Customers arrive in id order, so only those already seen occupy the heap.
            if arrived < total and (not heap or next_arrival <= heap[0][0]):
                self._arrive(arrived)
                arrived += 1
                next_arrival = shop._arrival(arrived)
                continue
            if not heap:
                return
            ts, _, item = heapq.heappop(heap)
            if type(item) is int:
                self._session(ts, item)
                continue
            self.counts["events"] += 1
            # At-least-once delivery: the same payload again. Copied first, as consumers may mutate.
            again = copy.deepcopy(item) if dup_rng.random() < shop.duplicate_rate else None
            yield item
            if again is not None:
                self.counts["duplicates"] += 1
                who = {k: again[k] for k in ("customer_id", "anonymous_id") if k in again}
                self.situation("duplicate_event", ts, None, event_id=again["event_id"], **who)
                yield again

    def situation(self, kind: str, ts: int, p: Profile | None, **fields: Any) -> None:
        if ts >= self.shop.end_ms:
            return  # never observable within the simulated period
        self.counts["situations"] += 1
        if self.sink is not None:
            who = {"customer_id": p.customer_id} if p is not None else {}
            self.sink({"kind": "situation", "situation": kind, **who, **fields, "ts": to_rfc3339(ts)})

    def event(
        self, p: Profile, ts: int, kind: str, ids: Mapping[str, str | None], fields: Mapping[str, Any], source: str
    ) -> None:
        if ts >= self.shop.end_ms:
            return
        self.event_no += 1
        topic = TOPIC_OF_TYPE[kind]
        # The app stamps epoch ms; the order system writes UTC; web and help desk write local time.
        if source == "app" and topic in ("clickstream", "control"):
            stamp: str | int = ts
        elif topic == "purchases":
            stamp = (_EPOCH + timedelta(milliseconds=ts)).isoformat(timespec="milliseconds") + "Z"
        else:
            local = _EPOCH + timedelta(milliseconds=ts + p.offset_ms)
            stamp = local.isoformat(timespec="seconds" if topic == "support" else "milliseconds") + p.offset_str
        event: dict[str, Any] = {
            "event_id": f"{self.shop._id_prefix}{self.event_no}",
            "type": kind,
            "ts": stamp,
            "source": source,
        }
        event.update(ids)
        event.update(fields)
        heapq.heappush(self.heap, (ts, next(self.seq), event))

    def _arrive(self, index: int) -> None:
        p = self.shop.profile(index)
        self.counts["customers"] += 1
        if self.sink is not None:
            self.sink(p.truth())
        if p.churned_at is not None:
            self.situation("churn", p.churned_at, p)
        if p.first_visit_at < self.shop.end_ms:
            heapq.heappush(self.heap, (p.first_visit_at, next(self.seq), _pack(index, 1, p.first_buy_at, 0)))

    def _category(self, p: Profile, rng: Random) -> str:
        if rng.random() < (0.85 if p.persona == "browser" else 0.7):
            return rng.choice(p.favourites)
        return _weighted(rng, CATEGORY_NAMES, CATEGORY_CUM_WEIGHTS)

    def _session(self, ts: int, state: int) -> None:
        shop = self.shop
        index, n, next_buy, flags = _unpack(state)
        p = shop.profile(index)
        rng = Random(shop._key(index, n))
        h = p.habits
        churned = p.churned_at is not None and ts >= p.churned_at
        buying = bool(flags & BUY) and not churned
        source = "app" if p.app else "web"
        t = ts
        if p.anonymous_id and p.identify_at is not None and not flags & IDENTIFIED and (ts >= p.identify_at or buying):
            # Login: the anonymous visitor lands, then the two ids are linked.
            self.event(p, t, "page_view", {"anonymous_id": p.anonymous_id}, {"url": "/login"}, source)
            t += _step(rng)
            self.event(p, t, "identify", {"anonymous_id": p.anonymous_id, "customer_id": p.customer_id}, {}, source)
            t += _step(rng)
            flags |= IDENTIFIED
        identified = not p.anonymous_id or bool(flags & IDENTIFIED)
        ids = {"customer_id": p.customer_id} if identified else {"anonymous_id": p.anonymous_id}
        if identified and p.consent and not flags & CONSENTED:
            self.event(p, t, "consent", ids, p.consent, source)
            t += _step(rng)
            flags |= CONSENTED
        category = self._category(p, rng)
        self.event(p, t, "page_view", ids, {"url": rng.choice(("/", "/deals", f"/c/{category}"))}, source)
        if rng.random() < h.search_p:
            t += _step(rng)
            self.event(p, t, "search", ids, {"query": rng.choice(CATEGORIES[category][1])}, source)
        for _ in range(rng.randint(1, 2) if churned else rng.randint(*h.views)):
            t += _step(rng)
            category = self._category(p, rng)
            product = shop.pick_product(rng, category, h.tier)
            item = {"product_id": product.product_id, "category": category, "price": product.price}
            self.event(p, t, "product_view", ids, item, source)
            if churned or rng.random() >= h.cart_p:
                continue
            t += _step(rng)
            self.event(p, t, "add_to_cart", ids, {**item, "quantity": 1}, source)
            bit = INTEREST << CATEGORY_NAMES.index(category)
            if p.persona == "browser" and category in p.favourites and not flags & bit:
                flags |= bit
                self.situation("abandoned_interest", t, p, category=category, product_id=product.product_id)
            if p.persona == "bargain_hunter" and rng.random() < 0.3:
                t += _step(rng)
                self.event(p, t, "remove_from_cart", ids, {**item, "quantity": 1}, source)
        if buying:
            self._purchase(p, rng, t + _step(rng), n, source)
            next_buy = self._next_buy(p, rng, ts)
        elif identified and not churned and rng.random() < h.question_p:
            opened = t + rng.randint(60, 3600) * SECOND
            self._ticket(p, rng, opened, f"t-{p.customer_id}-{n}", angry=False, order_id=None, refund=None)
        if churned and not flags & WON_BACK and p.churned_at is not None and ts >= p.churned_at + 14 * MS_PER_DAY:
            flags |= WON_BACK  # a lapsed customer is looking again: the moment for a win-back offer
            self.situation("win_back", ts, p, category=p.favourites[0])
        gap_days = h.visit_gap * (8 if churned else 1)  # lapsed customers mostly stop visiting
        nxt = shop.snap(p, rng, ts + max(2 * MS_PER_HOUR, int(rng.expovariate(1 / gap_days) * MS_PER_DAY)))
        flags &= ~BUY
        if next_buy and next_buy <= nxt:
            nxt, flags = max(next_buy, ts + MS_PER_HOUR), flags | BUY
        if nxt < shop.end_ms:
            heapq.heappush(self.heap, (nxt, next(self.seq), _pack(index, n + 1, next_buy, flags)))

    def _next_buy(self, p: Profile, rng: Random, ts: int) -> int | None:
        if p.cycle_days:
            gap = p.cycle_days + rng.uniform(-2, 2)
        elif p.habits.buy_gap:
            gap = rng.uniform(*p.habits.buy_gap)
        else:
            return None
        when = self.shop.snap(p, rng, ts + int(gap * MS_PER_DAY) - 12 * MS_PER_HOUR)
        return None if p.churned_at is not None and when >= p.churned_at else when

    def _purchase(self, p: Profile, rng: Random, t: int, n: int, source: str) -> None:
        shop, h = self.shop, p.habits
        ids = {"customer_id": p.customer_id}
        picks: dict[Product, int] = {}
        if p.cycle_product:
            picks[p.cycle_product] = rng.randint(1, 2)
        for _ in range(rng.randint(*h.items) if not p.cycle_product else int(rng.random() < 0.2)):
            product = shop.pick_product(rng, self._category(p, rng), h.tier)
            picks[product] = picks.get(product, 0) + rng.choice((1, 1, 1, 2))
        if not p.cycle_product and rng.random() < 0.06:  # the best seller, bought on impulse
            picks.setdefault(shop.spike_product, 1)
        rate = shop.currency_rates[p.currency]
        lines, cents = [], []
        for product, quantity in picks.items():
            item = {"product_id": product.product_id, "category": product.category, "price": product.price}
            if p.persona == "loyal" or rng.random() < 0.5:  # loyal customers look before they buy
                self.event(p, t, "product_view", ids, item, source)
                t += _step(rng)
            self.event(p, t, "add_to_cart", ids, {**item, "quantity": quantity}, source)
            t += _step(rng)
            price_cents = max(1, round(product.price * 100 / rate))
            cents.append(price_cents * quantity)
            lines.append({**item, "price": price_cents / 100, "quantity": quantity})
        order_id = f"o-{p.customer_id}-{n}"
        money = {"order_id": order_id, "currency": p.currency}
        self.event(p, t, "purchase", ids, {**money, "amount": sum(cents) / 100, "items": lines}, source)
        refunded = False
        if shop.spike_product in picks and t >= shop.spike_at and rng.random() < 0.5:
            line_cents = cents[list(picks).index(shop.spike_product)]
            returned = t + rng.randint(2 * 24 * 3600, 8 * 24 * 3600) * SECOND
            self.event(p, returned, "refund", ids, {**money, "amount": line_cents / 100, "reason": SPIKE_REASON}, "web")
            refunded = True
        if h.ticket_p and rng.random() < h.ticket_p:
            angry = p.persona == "angry"
            refund = sum(cents) if angry and not refunded and rng.random() < h.refund_p else None
            opened = shop.snap(p, rng, t + rng.randint(1, 4) * MS_PER_DAY)
            self._ticket(p, rng, opened, f"t-{p.customer_id}-{n}", angry=angry, order_id=order_id, refund=refund)
        elif not refunded and rng.random() < h.refund_p:
            amount = rng.choice(cents) if rng.random() < 0.5 else sum(cents)
            returned = t + rng.randint(3 * 24 * 3600, 14 * 24 * 3600) * SECOND
            reason = rng.choice(REFUND_REASONS)
            self.event(p, returned, "refund", ids, {**money, "amount": amount / 100, "reason": reason}, "web")
        if p.cycle_days:
            self.situation(
                "replenishment",
                t + p.cycle_days * MS_PER_DAY,
                p,
                category=p.cycle_product.category,
                product_id=p.cycle_product.product_id,
            )

    def _ticket(
        self, p: Profile, rng: Random, t: int, ticket_id: str, *, angry: bool, order_id: str | None, refund: int | None
    ) -> None:
        lang, ids = p.language, {"customer_id": p.customer_id}
        channel = rng.choice(("email", "chat"))
        subject = f"{'Problem' if angry else 'Question'} with order {order_id}" if order_id else "Pre-sales question"
        self.event(p, t, "ticket_opened", ids, {"ticket_id": ticket_id, "subject": subject}, channel)

        def say(at: int, texts: Mapping[str, tuple[str, ...]], direction: str) -> None:
            fields = {"ticket_id": ticket_id, "text": rng.choice(texts[lang]), "direction": direction, "channel": channel}
            self.event(p, at, "support_message", ids, fields, channel)

        t += rng.randint(30, 300) * SECOND
        if angry:
            say(t, ANGRY, "inbound")
            self.situation("angry_customer", t, p, ticket_id=ticket_id)
            reply = t + rng.randint(2 * 3600, 10 * 3600) * SECOND
            say(reply, AGENT, "outbound")
            for _ in range(rng.randint(1, 3)):  # chasing the same ticket within hours
                t += rng.randint(3600, 4 * 3600) * SECOND
                say(t, ANGRY_AGAIN, "inbound")
            closed = max(t, reply) + rng.randint(24 * 3600, 72 * 3600) * SECOND
            resolved, csat, score = rng.random() < 0.4, rng.randint(1, 2), rng.randint(0, 4)
            comment = "太差了,再也不买了" if lang == "zh" else "terrible service"
        else:
            say(t, POLITE if order_id else PRESALES, "inbound")
            reply = t + rng.randint(3600, 8 * 3600) * SECOND
            say(reply, AGENT if order_id else AGENT_PRESALES, "outbound")
            if rng.random() < 0.4:
                t = reply + rng.randint(1800, 3 * 3600) * SECOND
                say(t, THANKS, "inbound")
            closed = max(t, reply) + rng.randint(12 * 3600, 48 * 3600) * SECOND
            resolved, csat, score = True, rng.randint(4, 5), rng.randint(7, 10)
            comment = "很满意" if lang == "zh" else "quick and friendly"
        self.event(p, closed, "ticket_closed", ids, {"ticket_id": ticket_id, "resolved": resolved, "csat": csat}, channel)
        if angry or rng.random() < 0.5:
            surveyed = closed + rng.randint(2 * 3600, 24 * 3600) * SECOND
            self.event(p, surveyed, "survey", ids, {"score": score, "comment": comment}, "email")
        if refund is not None and order_id is not None:
            fields = {"order_id": order_id, "amount": refund / 100, "currency": p.currency, "reason": "damaged"}
            self.event(p, closed, "refund", ids, fields, "call_center")


def _malformed(rng: Random, event: dict[str, Any], role: str, key: str) -> tuple[str, str, bytes]:
    """A broken copy of ``event``: each of the contract's dead-letter causes in turn."""
    bad = dict(event, event_id=f"{event['event_id']}-bad")
    kind = rng.randrange(6)
    if kind == 0:
        return role, key, jsonutil.dumps(bad)[:-7]  # truncated: never valid JSON
    if kind == 1:
        del bad["type"]
    elif kind == 2:
        role = "purchases"
        bad.update(type="purchase", order_id=f"o-{bad['event_id']}", amount=-round(rng.uniform(1, 200), 2), currency="USD")
    elif kind == 3:
        bad["type"] = rng.choice(("teleport", "page_vew", "checkout_started"))
    elif kind == 4:
        bad["ts"] = rng.choice(("yesterday at noon", "2026-13-45T10:00:00Z", 1_700_000_000_000_000))
    else:
        return role, key, jsonutil.dumps(bad).replace(b'"event_id":"', b'"event_id":"\xff\xfe', 1)  # not UTF-8
    return role, key, jsonutil.dumps(bad)


class SimulatorReader:
    """The shop as a ``Reader``: one partition, resumable at a record index.

    Resuming regenerates the stream from the seed and skips ``position`` records, which is
    cheaper than checkpointing generator state. With ``rate`` > 0 (events per wall second)
    batches are small and spread out, so a live demo looks live; ``sleep``/``clock`` are
    injectable so tests never wait.
    """

    PARTITION = "simulator"

    def __init__(
        self,
        settings: SimulatorSettings | None = None,
        *,
        batch_size: int = 1000,
        rate: float | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        **shop_options: Any,
    ) -> None:
        self.settings = settings or SimulatorSettings()
        self.batch_size = batch_size
        self.rate = self.settings.rate if rate is None else rate
        self.sleep = sleep
        self.clock = clock
        self.shop_options = shop_options

    def partitions(self) -> list[str]:
        return [self.PARTITION]

    def open(self, partition: str, position: Any | None) -> SimulatorPartition:
        if partition != self.PARTITION:
            raise ValueError(f"simulator has one partition, {self.PARTITION!r}; got {partition!r}")
        records = Shop(self.settings, **self.shop_options).records()
        return SimulatorPartition(records, int(position or 0), self.batch_size, self.rate, self.sleep, self.clock)


class SimulatorPartition:
    # At most this much wall time of events per paced batch.
    PACED_BATCH_SECONDS = 0.1
    # Longest single sleep while waiting for the next paced record; the caller backs off too.
    MAX_SLEEP_SECONDS = 0.02

    def __init__(
        self,
        records: Iterator[tuple[str, str, bytes]],
        position: int,
        batch_size: int,
        rate: float,
        sleep: Callable[[float], Any],
        clock: Callable[[], float],
    ) -> None:
        self._records = records
        collections.deque(itertools.islice(records, position), maxlen=0)
        self._offset = position
        self._next = next(records, None)
        self._batch_size = max(1, batch_size)
        self._rate = rate
        self._sleep = sleep
        self._clock = clock
        self._started: float | None = None
        self._paced = 0

    def read_batch(self) -> list[Raw]:
        limit = self._batch_size if self._rate <= 0 else min(self._batch_size, self._due())
        batch: list[Any] = []
        while len(batch) < limit and self._next is not None:
            role, _key, value = self._next
            batch.append(Raw(role, 0, self._offset, value))
            self._offset += 1
            self._next = next(self._records, None)
        self._paced += len(batch)
        return batch

    def _due(self) -> int:
        """How many records the wall clock allows now (sleeping briefly if none yet)."""
        now = self._clock()
        if self._started is None:
            self._started = now
        due = int((now - self._started) * self._rate) - self._paced
        if due <= 0:
            wait = (self._paced + 1) / self._rate - (now - self._started)
            self._sleep(min(max(wait, 0.0), self.MAX_SLEEP_SECONDS))
            due = int((self._clock() - self._started) * self._rate) - self._paced
        return max(0, min(due, max(1, int(self._rate * self.PACED_BATCH_SECONDS))))

    def position(self) -> int:
        return self._offset

    def done(self) -> bool:
        return self._next is None

    def close(self) -> None:
        close = getattr(self._records, "close", None)
        if close is not None:
            close()
