"""A simulated shop: contract events from customers with known habits, plus the truth behind them.

The engine is judged against what the simulator *decided* (who is a lapsing
customer and when they churned, which product has a return spike, ...), so
``truth()`` is written from the simulation's own parameters, never re-derived
from the events.

Memory stays flat in the number of events: each customer is one packed integer
in a heap of pending work, and a customer's profile is re-derived from the seed
whenever one of their sessions runs (cheaper than keeping a million profiles).
A session pushes its events, and any later consequences (ticket replies,
refunds), into the same heap, which therefore yields everything in event-time
order. Everything draws from ``random.Random`` seeded from ``settings.seed``:
the same settings give the same bytes.

>>> shop = Shop(SimulatorSettings(customers=5, days=10, seed=1))
>>> first = next(shop.events())
>>> first["type"], sorted(shop.counts()) == sorted(Shop.COUNT_KEYS)
('page_view', True)
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import itertools
import time
from datetime import datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any, Callable, Iterator, Mapping, NamedTuple

from config.settings import SimulatorSettings
from operators import jsonutil
from operators.io import Raw
from operators.schema import TOPIC_OF_TYPE
from operators.timeutil import MS_PER_DAY, MS_PER_HOUR, parse_ts, to_rfc3339

PERSONAS = ("loyal", "bargain_hunter", "lapsing", "browser", "angry", "replenishment")
PERSONA_WEIGHTS = (22, 16, 16, 14, 12, 20)
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
    ("UTC", 0, 10), ("Asia/Shanghai", 480, 20), ("America/Bogota", -300, 20), ("America/Sao_Paulo", -180, 10),
    ("Africa/Lagos", 60, 10), ("Asia/Tokyo", 540, 10), ("Asia/Kolkata", 330, 10), ("Asia/Dubai", 240, 10),
)
# Local hour around which a customer is active, and its spread (hours).
ACTIVE_HOURS = ((8.0, 1.5), (12.5, 2.0), (20.0, 2.0), (23.0, 1.5))

ANGRY = {
    "en": ("WHERE IS MY ORDER??? Two weeks and nothing!!!", "Your product broke after one day. I want my money back NOW!!!",
           "Worst service ever. Completely unacceptable!!!", "The package arrived damaged AGAIN. Fix this!!!"),
    "zh": ("这破玩意儿真难用!!!", "太差劲了,马上给我退款!!!", "说好的三天到货,现在都一周了!!!", "东西又坏了,你们到底怎么做质检的?!"),
}
ANGRY_AGAIN = {
    "en": ("This is the third time I'm asking, unacceptable!!!", "I wrote hours ago and NOBODY answered!!!",
           "Still waiting. Is anyone even reading this?!", "STOP ignoring me and fix it!!!"),
    "zh": ("我已经问了三次了,到底有没有人管?!", "几个小时了还没人回复,太离谱了!!!", "再不处理我就投诉你们!!!"),
}
POLITE = {
    "en": ("Hi, could you tell me when my order ships? Thanks", "Hello, can I change the delivery address for my order? Thank you!",
           "Hi! Does this come in a larger size? Thanks a lot", "Could you send me the invoice for my last order, please?"),
    "zh": ("你好,请问我的订单什么时候发货?谢谢", "您好,可以帮我改一下收货地址吗?谢谢!", "请问这个有大号的吗?谢谢", "麻烦开一下上个订单的发票,谢谢。"),
}
PRESALES = {"en": ("Hi, do you ship to Canada? Thanks", "Hello! When does the summer sale start?"),
            "zh": ("请问这个多久能到货?谢谢", "你好,请问什么时候有促销活动?")}
THANKS = {"en": ("Great, thanks for the quick help!", "Perfect, thank you!"), "zh": ("好的,谢谢!", "收到了,谢谢你们的帮助!")}
AGENT = {
    "en": ("Hi, thanks for reaching out. I've checked your order and it ships tomorrow.",
           "Sorry for the trouble, I've escalated this to our logistics team."),
    "zh": ("您好,您的订单明天发货,感谢耐心等待。", "非常抱歉给您带来不便,我们已经加急处理。"),
}
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


class Product(NamedTuple):
    product_id: str
    category: str
    price: float  # list price in USD


class Profile:
    """What the simulator decided about one customer; re-derived from the seed on demand."""

    __slots__ = ("index", "customer_id", "persona", "habits", "timezone", "offset_ms", "offset_str", "peak_hour",
                 "hour_spread", "app", "currency", "language", "favourites", "anonymous_id", "identify_at", "consent",
                 "churned_at", "cycle_days", "cycle_product", "first_visit_at", "first_buy_at")

    def truth(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "kind": "customer", "customer_id": self.customer_id, "persona": self.persona, "timezone": self.timezone,
            "utc_offset": self.offset_str, "currency": self.currency, "language": self.language,
            "categories": list(self.favourites), "consent": self.consent,
            "churned_at": to_rfc3339(self.churned_at) if self.churned_at is not None else None,
        }
        if self.anonymous_id:
            line["anonymous_id"] = self.anonymous_id
            line["identify_at"] = to_rfc3339(self.identify_at)
        if self.cycle_days:
            line.update(cycle_days=self.cycle_days, cycle_category=self.cycle_product.category,
                        cycle_product=self.cycle_product.product_id)
        return line


class Shop:
    """The catalogue and customers for ``settings``; every method starts a fresh, identical simulation.

    ``currency_rates`` (units of USD per unit) limits which currencies orders use (USD, EUR, CNY when
    present); ``duplicate_rate`` is the chance that an event is delivered twice.
    """

    COUNT_KEYS = ("customers", "events", "duplicates", "malformed", "records", "situations")

    def __init__(self, settings: SimulatorSettings | None = None, *, currency_rates: Mapping[str, float] | None = None,
                 duplicate_rate: float = 0.005) -> None:
        self.settings = s = settings or SimulatorSettings()
        if s.customers <= 0 or s.days <= 0:
            raise ValueError(f"simulator needs customers > 0 and days > 0, got {s.customers} and {s.days}")
        if not 0.0 <= s.bad_rate < 1.0 or not 0.0 <= s.anonymous_share <= 1.0 or not 0.0 <= duplicate_rate < 1.0:
            raise ValueError("simulator bad_rate and duplicate_rate must be in [0, 1), anonymous_share in [0, 1]")
        self.currency_rates = dict(currency_rates or DEFAULT_CURRENCY_RATES)
        self.currencies = [(c, w) for c, w in (("USD", 80), ("EUR", 12), ("CNY", 8)) if c in self.currency_rates]
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
        self._by_category: dict[str, tuple[list[Product], list[float]]] = {}
        for category, ((low, high), _) in CATEGORIES.items():
            prices = sorted(round(rng.uniform(low, high), 2) for _ in range(PRODUCTS_PER_CATEGORY))
            items = [Product(f"p-{category}-{k + 1:02d}", category, price) for k, price in enumerate(prices)]
            self.products += items
        electronics = [p for p in self.products if p.category == "electronics"]
        self.spike_product = rng.choice(electronics[1:-1])  # mid-priced: bought often enough to show
        self.spike_at = self.start_ms + int(s.days * MS_PER_DAY * rng.uniform(0.5, 0.6)) // SECOND * SECOND
        for category in CATEGORIES:
            items = [p for p in self.products if p.category == category]
            # The spike product is a best seller, so its returns stand out from noise.
            weights = list(itertools.accumulate(4.0 if p == self.spike_product else 1.0 for p in items))
            self._by_category[category] = (items, weights)

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

    def counts(self) -> dict[str, int]:
        run = _Run(self, None)
        collections.deque(self._records(run), maxlen=0)
        return run.counts

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
        p.index = index
        p.customer_id = f"c{index:07d}"
        # The first customers take one persona each, so every persona shows up even in a tiny shop.
        p.persona = PERSONAS[index] if index < len(PERSONAS) else rng.choices(PERSONAS, PERSONA_WEIGHTS)[0]
        p.habits = HABITS[p.persona]
        p.timezone, offset_min, _ = rng.choices(TIMEZONES, [w for _, _, w in TIMEZONES])[0]
        p.offset_ms = offset_min * 60_000
        sign, minutes = ("+" if offset_min >= 0 else "-"), abs(offset_min)
        p.offset_str = "Z" if offset_min == 0 else f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
        p.peak_hour, p.hour_spread = rng.choice(ACTIVE_HOURS)
        p.app = rng.random() < 0.3
        china = p.timezone == "Asia/Shanghai"
        p.language = "zh" if rng.random() < (0.85 if china else 0.12) else "en"
        if china and "CNY" in self.currency_rates and rng.random() < 0.6:
            p.currency = "CNY"
        else:
            p.currency = rng.choices([c for c, _ in self.currencies], [w for _, w in self.currencies])[0]
        p.favourites = tuple(rng.sample(CATEGORY_NAMES, 1 if p.persona == "browser" and rng.random() < 0.5 else 2))
        p.consent = None
        if rng.random() < 0.85:
            p.consent = {"marketing_email": rng.random() < 0.7, "marketing_sms": rng.random() < 0.3,
                         "marketing_push": rng.random() < 0.5,
                         "contact_frequency": "low" if rng.random() < 0.2 else "normal"}
        arrival = self.start_ms + self.arrival_window_ms * (2 * index + 1) // (2 * self.settings.customers)
        p.first_visit_at = self.snap(p, rng, arrival)
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
            p.cycle_product = rng.choice(self._by_category[category][0])
            first_gap = rng.uniform(0, p.cycle_days)
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
        items, weights = self._by_category[category]
        if tier is None:
            return rng.choices(items, cum_weights=weights)[0]
        half = len(items) // 2
        return rng.choice(items[:half] if tier == "cheap" else items[half:])

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
