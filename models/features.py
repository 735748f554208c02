"""Model features: pure functions of a live profile and an event time.

Everything here reads the profile *as of* ``as_of_ms`` and nothing else, so a
feature vector computed at time t uses only what was known at t (the profile
is folded in event time; see operators/profile/state.py). Every value is a finite
float: missing facts (no purchase yet, no survey) become a neutral value plus
a ``has_...`` indicator, heavy-tailed counts are ``log1p``-ed, ratios are
clipped, so one odd customer cannot blow up a linear model's weights.

The repeat-buying literature's strongest single signal is recency *relative
to the customer's own rhythm* (a weekly buyer silent for 20 days is lapsing, a
quarterly buyer is not): ``relative_recency`` divides days since the last
purchase by the customer's typical gap, shrunk towards the population median
as models/rhythm.py does. The baseline estimates themselves are features too
(``rhythm_churn_logit``, ``log_rhythm_next_days``, ``gap_due_days``): the
online models learn corrections on top of them instead of rediscovering them.

Every feature is as of a prediction point, which is an event of the customer's
(models/labels.py), so "days since last seen" would always be 0 in training:
it is left out rather than learned as a constant and extrapolated at serving.

>>> from operators.profile.state import new_profile
>>> p = new_profile("c1", 0)
>>> x = features(p, 3 * 86_400_000, population_gap_days=20.0)
>>> x["is_prospect"], x["recency_days"], len(x) == len(FEATURE_NAMES)
(1.0, 3.0, True)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any

from crm_stream.models import rhythm
from crm_stream.models.bgnbd_stream import StreamingBGNBD

MS_PER_DAY = 86_400_000
MAX_DAYS = 3650.0  # ten years: anything older says no more than that
MAX_RATIO = 50.0
DEFAULT_HORIZON_DAYS = 30.0
DEFAULT_INTEREST_HALF_LIFE_DAYS = 14.0  # config default engine.interest_half_life_days

FEATURE_NAMES: tuple[str, ...] = (
    # purchase rhythm (RFM and relative recency)
    "is_prospect",
    "recency_days",
    "log_recency_days",
    "log_frequency",
    "log_monetary",
    "log_avg_order_value",
    "log_tenure_days",
    "log_gap_mean_days",
    "gap_cv",
    "log_typical_gap_days",
    "relative_recency",
    "log_relative_recency",
    "overdue",
    "purchases_30d",
    "purchases_90d",
    "rhythm_churn_logit",
    "log_rhythm_next_days",
    "gap_due_days",
    "log_gap_due_days",
    # the streaming BG/NBD (models/bgnbd_stream.py): for a prospect, the rhythm estimate's churn and next purchase
    "bgnbd_churn_logit",
    "bgnbd_alive_logit",
    "bgnbd_next_days",
    "log_bgnbd_next_days",
    # browsing and cart
    "log_events",
    "events_per_day",
    "recent_interest",
    "log_page_views",
    "log_product_views",
    "log_searches",
    "log_add_to_cart",
    "log_remove_from_cart",
    "cart_items",
    "log_cart_value",
    "log_cart_age_days",
    # support
    "open_tickets",
    "log_tickets_opened",
    "sentiment",
    "has_sentiment",
    "last_message_sentiment",
    "log_refunds",
    "refund_share",
    "nps",
    "has_nps",
    "csat",
    "has_csat",
    # consent
    "consent_any",
    "consent_low_frequency",
)
N_FEATURES = len(FEATURE_NAMES)
BGNBD_CHURN_LOGIT = FEATURE_NAMES.index("bgnbd_churn_logit")
BGNBD_NEXT_DAYS = FEATURE_NAMES.index("bgnbd_next_days")
PRIOR_POPULATION = StreamingBGNBD()
"""Population parameters for callers without a fitted population: the published CDNOW prior (models/bgnbd_stream.py)."""


def _days(ms: float) -> float:
    return min(MAX_DAYS, max(0.0, ms / MS_PER_DAY))


def _logit(p: float) -> float:
    p = min(1.0 - 1e-6, max(1e-6, p))
    return math.log(p / (1.0 - p))


def recency_days(profile: Mapping[str, Any], as_of_ms: int) -> float | None:
    """Days since the last purchase (None for a prospect), never negative."""
    last = profile["last_purchase_at"]
    return None if last is None else _days(as_of_ms - last)


def feature_vector(
    profile: Mapping[str, Any],
    as_of_ms: int,
    population_gap_days: float,
    *,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
    interest_half_life_days: float = DEFAULT_INTEREST_HALF_LIFE_DAYS,
    population: StreamingBGNBD | None = None,
) -> list[float]:
    """The features in ``FEATURE_NAMES`` order: what pending buffers store (compact, no keys)."""
    return feature_vector_and_rhythm(
        profile,
        as_of_ms,
        population_gap_days,
        horizon_days=horizon_days,
        interest_half_life_days=interest_half_life_days,
        population=population,
    )[0]


def rhythm_inputs_match(as_of_ms: int, last_purchase_at: int | None, population_gap_days: float) -> bool:
    """Were the rhythm estimates of ``feature_vector_and_rhythm`` computed from exactly these raw inputs?

    The features clip recency at ``MAX_DAYS`` and replace an unusable population gap by 30 days; when
    neither applies, their estimates are what ``rhythm.churn_risk`` / ``next_purchase_in_days`` give
    for the raw inputs, and a caller that needs those too may reuse them instead of recomputing.
    """
    if not (population_gap_days > 0 and math.isfinite(population_gap_days)):
        return False
    return last_purchase_at is None or (as_of_ms - last_purchase_at) / MS_PER_DAY <= MAX_DAYS


def feature_vector_and_rhythm(
    profile: Mapping[str, Any],
    as_of_ms: int,
    population_gap_days: float,
    *,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
    interest_half_life_days: float = DEFAULT_INTEREST_HALF_LIFE_DAYS,
    population: StreamingBGNBD | None = None,
) -> tuple[list[float], float, float]:
    """``feature_vector`` and the rhythm estimates it was built from (churn risk, days to next purchase).

    The hub records those estimates as baselines at every prediction point: see ``rhythm_inputs_match``
    for when they equal a computation from the raw inputs.
    """
    frequency: int = profile["frequency"]
    monetary = max(0.0, float(profile["monetary"]))
    first_seen = profile["first_seen"]
    first_purchase = profile["first_purchase_at"]
    gap_mean = profile["gap_mean_days"]
    gap_std = profile["gap_std_days"]
    population_gap = population_gap_days if population_gap_days > 0 and math.isfinite(population_gap_days) else 30.0

    recency = recency_days(profile, as_of_ms)
    prospect = recency is None
    # A prospect's "recency" is how long they have been around without buying.
    silence = _days(as_of_ms - first_seen) if recency is None else recency  # recency is None exactly for a prospect
    tenure = _days(as_of_ms - (first_purchase if first_purchase is not None else first_seen))
    typical_gap = rhythm.typical_gap_days(frequency, gap_mean, population_gap)
    relative = min(MAX_RATIO, silence / typical_gap)
    due = max(0.0, typical_gap - silence)  # the naive next-purchase estimate: the usual gap, minus what has passed

    times = profile["purchase_times"]
    upto = bisect.bisect_right(times, as_of_ms)
    last_30 = upto - bisect.bisect_right(times, as_of_ms - 30 * MS_PER_DAY)
    last_90 = upto - bisect.bisect_right(times, as_of_ms - 90 * MS_PER_DAY)

    churn, next_days = rhythm.estimates_for_gap(frequency, typical_gap, recency, horizon_days)
    if frequency > 0 and first_purchase is not None:
        bg = (population or PRIOR_POPULATION).estimate(
            frequency, first_purchase, profile["last_purchase_at"], as_of_ms, horizon_days
        )
        bg_churn, bg_alive, bg_next = bg.p_none, bg.p_alive, min(MAX_DAYS, bg.next_days)
    else:  # a prospect: BG/NBD starts at the first purchase; the rhythm estimate's prior for prospects stands in
        bg_churn, bg_alive, bg_next = churn, rhythm.PROSPECT_ALIVE, next_days

    counts = profile["type_counts"]
    half_life_ms = interest_half_life_days * MS_PER_DAY
    interest = 0.0
    for value, ref in profile["interests"].values():
        interest += value * math.exp(-0.6931471805599453 * (as_of_ms - ref) / half_life_ms) if as_of_ms > ref else value
    cart = profile["cart"]
    cart_value = 0.0
    cart_since = as_of_ms
    for item in cart.values():
        cart_value += (item.get("price") or 0.0) * max(0, item.get("quantity") or 0)
        cart_since = min(cart_since, item.get("added_at") or as_of_ms)

    num, den, _ = profile["sentiment"]
    has_sentiment = den > 1e-9
    last_message = profile["last_message_sentiment"]
    refund_amount = max(0.0, float(profile["refund_amount"]))
    nps = profile["nps"]
    csat = profile["last_csat"]
    consent = profile["consent"]
    events = profile["events"]

    vector = [
        1.0 if prospect else 0.0,
        silence,
        math.log1p(silence),
        math.log1p(frequency),
        math.log1p(monetary),
        math.log1p(monetary / frequency) if frequency else 0.0,
        math.log1p(tenure),
        math.log(max(0.5, gap_mean if gap_mean is not None else population_gap)),
        min(MAX_RATIO, gap_std / gap_mean) if gap_std is not None and gap_mean else 0.0,
        math.log(typical_gap),
        relative,
        math.log1p(relative),
        max(0.0, relative - 1.0),
        float(last_30),
        float(last_90),
        _logit(churn),
        math.log1p(next_days),
        due,
        math.log1p(due),
        _logit(bg_churn),
        _logit(bg_alive),
        bg_next,
        math.log1p(bg_next),
        math.log1p(events),
        min(MAX_RATIO, events / max(1.0, _days(as_of_ms - first_seen))),
        math.log1p(max(0.0, interest)),
        math.log1p(counts.get("page_view", 0)),
        math.log1p(counts.get("product_view", 0)),
        math.log1p(counts.get("search", 0)),
        math.log1p(counts.get("add_to_cart", 0)),
        math.log1p(counts.get("remove_from_cart", 0)),
        float(min(len(cart), 100)),
        math.log1p(max(0.0, cart_value)),
        math.log1p(_days(as_of_ms - cart_since)) if cart else 0.0,
        float(min(len(profile["tickets"]), 50)),
        math.log1p(profile["tickets_opened"]),
        num / den if has_sentiment else 0.0,
        1.0 if has_sentiment else 0.0,
        float(last_message) if last_message is not None else 0.0,
        math.log1p(profile["refunds"]),
        refund_amount / (monetary + refund_amount) if refund_amount > 0 else 0.0,
        (nps - 5.0) / 5.0 if nps is not None else 0.0,
        1.0 if nps is not None else 0.0,
        (csat - 3.0) / 2.0 if csat is not None else 0.0,
        1.0 if csat is not None else 0.0,
        1.0 if (consent["marketing_email"] or consent["marketing_sms"] or consent["marketing_push"]) else 0.0,
        1.0 if consent["contact_frequency"] == "low" else 0.0,
    ]
    # A corrupt or extreme profile must cost one neutral feature, never a NaN in the weights. A finite
    # sum means every value is finite (an inf or a NaN anywhere makes the sum inf or NaN): one C-level
    # pass instead of a Python-level test per feature in the usual case.
    if not math.isfinite(sum(vector)):
        vector = [v if math.isfinite(v) else 0.0 for v in vector]
    return vector, churn, next_days


def features(
    profile: Mapping[str, Any],
    as_of_ms: int,
    population_gap_days: float,
    *,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
    interest_half_life_days: float = DEFAULT_INTEREST_HALF_LIFE_DAYS,
    population: StreamingBGNBD | None = None,
) -> dict[str, float]:
    """Named features of ``profile`` as of ``as_of_ms`` (see ``FEATURE_NAMES``); all finite floats."""
    return dict(
        zip(
            FEATURE_NAMES,
            feature_vector(
                profile,
                as_of_ms,
                population_gap_days,
                horizon_days=horizon_days,
                interest_half_life_days=interest_half_life_days,
                population=population,
            ),
        )
    )


def as_dict(vector: Any) -> dict[str, float]:
    """A stored vector (``feature_vector`` order) back into the dict River models take."""
    return dict(zip(FEATURE_NAMES, vector))
