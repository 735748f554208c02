"""Churn and next-purchase predictions on real customers (CDNOW), against the classics fitted in the same run.

    python -m load.eval_real                          # horizons 30 and 90 days, cuts at weeks 26, 39, 52 (~2-4 min)
    python -m load.eval_real --out /tmp/real.json     # also the numbers as JSON
    python -m load.eval_real --horizons 90 --cuts 39  # one row

The log: CDNOW (load/cdnow.py): 23,502 real customers' 67,511 customer-day
purchases over 18 months, converted to contract ``purchase`` events. The engine
runs on them through its own pipeline, framework-free, as ``crm-stream
evaluate`` does (router, identity shard, profile shards, the model hub fed in
event time, rules and timers), with the churn horizon under test.

Two protocols:

1. **Progressive** (test-then-train) over the whole stream: every prediction
   point of the hub is scored when its label resolves, before anyone learns
   from it (models/evaluation.py). With a purchase log only, the points are the
   purchases and the churn rule's checks of silent customers (at widening points
   into a silence, models/labels.py): about two points per purchase on CDNOW.
2. **Cut dates** (weeks after 1997-01-01): the engine reads the log up to the
   cut, and every customer who had bought by then is scored *as of the cut*
   with what the engine serves (``ProfileShard.churn_risk``, the model hub's
   served next purchase). Label: no purchase in the horizon after the cut.
   Baselines scored on the same customers: recency (days since the last
   purchase), frequency (fewer purchases, more risk), the engine's rhythm
   estimate (models/rhythm.py), and BG/NBD and MBG/NBD fitted by maximum
   likelihood on the prefix up to the cut (models/bgnbd.py), scored with
   P(no purchase in the horizon) (never the raw P(alive): it is 1 for every
   one-time buyer).

Measures: churn AUC (exact, ties halved), Brier, a calibration table (deciles
of the served score); next-purchase MAE in days over the customers whose next
purchase after the cut is in the log (the served days *if the customer returns*
against the mean-gap baseline "usual gap minus days elapsed" and BG/NBD's median
among futures with a purchase within W; and the estimates for everyone, P(gone)
x W included, which are scored counting the customers who never came back too);
purchases in the horizon, summed and per-customer MAE (served streaming BG/NBD
vs BG/NBD fitted at the cut); the churn rate of the customers the engine flagged
with a ``churn_risk`` service alert in the 30 days before the cut, against the
high-value customers' (the pool calls are drawn from) and everyone's (lift).

Nothing is written unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
from scipy import stats

from crm_stream.config import settings as config
from crm_stream.models import bgnbd, rhythm
from crm_stream.models.evaluation import CHURN_SOURCES, ProgressiveValidation
from crm_stream.models.hub import ModelHub, frequency_churn_score, recency_churn_score
from crm_stream.operators.events.router import DEAD, Router
from crm_stream.operators.events.schema import Decoder
from crm_stream.operators.io.interface import SERVICE, Raw
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import MemoryStore
from crm_stream.operators.profile.segments import ThresholdBoard
from crm_stream.operators.stages.identity import IdentityShard
from crm_stream.operators.stages.learning import SharedModels
from crm_stream.operators.stages.shard import ProfileShard
from load import cdnow

MS_PER_DAY = 86_400_000
CUT_SOURCES = ("served", "recency", "frequency", "rhythm", "bgnbd", "mbgnbd")
ALERT_WINDOW_DAYS = 30.0


# -- measures ---------------------------------------------------------------------------------


def auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """ROC AUC from ranks (ties count half).

    >>> auc([False, False, True, True], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(labels, dtype=bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        return 0.5
    ranks = stats.rankdata(np.asarray(scores, dtype=float))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def paired_auc_difference(labels: Sequence[bool], first: Sequence[float], second: Sequence[float]) -> tuple[float, float]:
    """AUC(first) - AUC(second) on the same labels, and its standard error (DeLong et al. 1988).

    The labels are taken as independent; a customer's labels are not, so the error is a lower bound.

    >>> diff, se = paired_auc_difference([False, False, True, True], [0.1, 0.4, 0.35, 0.8], [0.1, 0.2, 0.3, 0.4])
    >>> diff, round(se, 3)
    (-0.25, 0.354)
    """
    y = np.asarray(labels, dtype=bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives < 2 or negatives < 2:
        return 0.0, float("nan")
    placements_pos, placements_neg = [], []
    for scores in (first, second):
        s = np.asarray(scores, dtype=float)
        ranks = stats.rankdata(s)
        placements_pos.append((ranks[y] - stats.rankdata(s[y])) / negatives)  # share of negatives below each positive
        placements_neg.append(1.0 - (ranks[~y] - stats.rankdata(s[~y])) / positives)
    diff = float(placements_pos[0].mean() - placements_pos[1].mean())
    d_pos, d_neg = placements_pos[0] - placements_pos[1], placements_neg[0] - placements_neg[1]
    variance = d_pos.var(ddof=1) / positives + d_neg.var(ddof=1) / negatives
    return diff, float(variance**0.5)


def brier(labels: Sequence[bool], scores: Sequence[float]) -> float:
    y = np.asarray(labels, dtype=float)
    return float(np.mean((np.asarray(scores, dtype=float) - y) ** 2))


def calibration(labels: Sequence[bool], scores: Sequence[float], bins: int = 10) -> list[dict[str, float]]:
    """Deciles of the score: customers, mean predicted, observed rate."""
    order = np.argsort(np.asarray(scores, dtype=float), kind="stable")
    y = np.asarray(labels, dtype=float)[order]
    p = np.asarray(scores, dtype=float)[order]
    out = []
    for part_y, part_p in zip(np.array_split(y, bins), np.array_split(p, bins)):
        if part_y.size:
            out.append({"n": int(part_y.size), "predicted": float(part_p.mean()), "observed": float(part_y.mean())})
    return out


# -- the engine, driven as `crm-stream evaluate` drives it, with stops at the cut dates ---------------


class KeepingValidation(ProgressiveValidation):
    """The hub's progressive validation, also keeping every churn label with its scores (for paired differences)."""

    def __init__(self, window: int) -> None:
        super().__init__(window)
        self.kept: list[tuple[bool, ...]] = []

    def score_churn(self, churned: bool, predictions: Sequence[float]) -> None:
        self.kept.append((bool(churned), *predictions))
        super().score_churn(churned, predictions)

    def paired(self, against: Sequence[str] = ("bgnbd", "recency")) -> dict[str, dict[str, float]]:
        """AUC(served) - AUC(each of ``against``) on the same labels, with its standard error."""
        labels = [row[0] for row in self.kept]
        column = {name: [row[1 + i] for row in self.kept] for i, name in enumerate(CHURN_SOURCES)}
        out = {}
        for name in against:
            diff, se = paired_auc_difference(labels, column["served"], column[name])
            out[name] = {"difference": diff, "standard_error": se}
        return out


class Engine:
    """The engine's pipeline (operators/stages/evaluate.py's loop) over in-memory events, keeping its alerts."""

    def __init__(self, horizon_days: float, seed: int = 0) -> None:
        settings = config.load(None, env={})
        e = replace(settings.engine, churn_horizon_days=int(horizon_days))
        self.settings = settings = replace(settings, engine=e)
        self.hub = ModelHub(horizon_days, seed, interest_half_life_days=e.interest_half_life_days)
        self.validation = self.hub.evaluation = KeepingValidation(self.hub.evaluation.window)
        self.store = MemoryStore()
        self.keys = KeySpace(settings.store.key_prefix)
        self.models = SharedModels(self.store, self.keys, replace(settings.models, enabled=False), horizon_days)
        self.models.hub = self.hub
        self.board = ThresholdBoard(settings.segments)
        self.router = Router(Decoder(settings.currency_rates, e.base_currency, settings.kafka.max_message_bytes), e.shards)
        self.identities: dict[int, IdentityShard] = {}
        self.shards: dict[int, ProfileShard] = {}
        self.alerts: list[dict[str, Any]] = []
        self.line = 0

    def _shard(self, number: int) -> ProfileShard:
        found = self.shards.get(number)
        if found is None:
            found = self.shards[number] = ProfileShard(
                number, self.settings, self.store, self.keys, board=self.board, models=self.models
            )
        return found

    def feed(self, events: Sequence[dict[str, Any]]) -> None:
        batch = []
        for event in events:
            self.line += 1
            batch.append(Raw(None, -1, self.line, orjson.dumps(event)))
        e = self.settings.engine
        for key, value in self.router.route(batch):
            if key == DEAD:
                continue
            own, routed_events, clocks = value.shard, value.events, value.clocks
            identity = self.identities.get(own)
            if identity is None:
                identity = self.identities[own] = IdentityShard(self.store, self.keys, e.shards, e.anonymous_max_events)
            routed, _ = identity.process(routed_events)
            routed.setdefault(own, [])
            for target, target_events in routed.items():
                for effect in self._shard(target).process(target_events, clocks if target == own else None):
                    if effect[0] == SERVICE:
                        alert = orjson.loads(effect[2])
                        if alert["kind"] == "churn_risk":
                            self.alerts.append(alert)

    def profiles(self) -> list[tuple[ProfileShard, dict[str, Any]]]:
        return [(shard, p) for _, shard in sorted(self.shards.items()) for p in shard.held_profiles()]


# -- one horizon: the stream with stops at the cuts --------------------------------------------


def evaluate_horizon(
    purchases: list[cdnow.Purchase],
    horizon_days: float,
    cut_weeks: Sequence[int],
    *,
    seed: int = 0,
    batch_size: int = 250,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    engine = Engine(horizon_days, seed)
    by_customer: dict[str, list[int]] = {}
    for p in purchases:
        by_customer.setdefault(p.customer_id, []).append(cdnow.ts_ms(p))
    end_ms = max(cdnow.ts_ms(p) for p in purchases)
    cuts = sorted((cdnow.START_DAY + 7 * w) * MS_PER_DAY for w in cut_weeks)
    results: list[dict[str, Any]] = []
    pending_cuts = list(zip(sorted(cut_weeks), cuts))
    batch: list[dict[str, Any]] = []
    started = time.perf_counter()
    for p in purchases:
        ts = cdnow.ts_ms(p)
        while pending_cuts and ts > pending_cuts[0][1]:
            engine.feed(batch)
            batch = []
            week, cut = pending_cuts.pop(0)
            progress(f"  horizon {horizon_days:g}: cut at week {week}")
            results.append(score_cut(engine, by_customer, week, cut, horizon_days, end_ms))
        batch.append(cdnow.purchase_event(p))
        if len(batch) >= batch_size:
            engine.feed(batch)
            batch = []
    engine.feed(batch)
    seconds = time.perf_counter() - started
    metrics = engine.hub.metrics()
    return {
        "horizon_days": horizon_days,
        "events": len(purchases),
        "seconds": round(seconds, 1),
        "progressive": metrics,
        "progressive_served_minus": engine.validation.paired(),
        "cuts": results,
        "service_alerts": len(engine.alerts),
        "alerted_customers": len({a["customer_id"] for a in engine.alerts}),
    }


def score_cut(
    engine: Engine, by_customer: dict[str, list[int]], week: int, cut: int, horizon_days: float, end_ms: int
) -> dict[str, Any]:
    horizon_ms = horizon_days * MS_PER_DAY
    rows: list[dict[str, Any]] = []
    for shard, profile in engine.profiles():
        first = profile["first_purchase_at"]
        if first is None or first > cut:
            continue
        customer = profile["customer_id"]
        times = by_customer[customer]
        after = bisect.bisect_right(times, cut)
        bought_in_horizon = bisect.bisect_right(times, cut + horizon_ms) - after
        last = profile["last_purchase_at"]
        recency = (cut - last) / MS_PER_DAY
        frequency = profile["frequency"]
        gap_days = shard.thresholds().population_gap_days
        rows.append(
            {
                "churned": bought_in_horizon == 0,
                "purchases": bought_in_horizon,
                "next_days": (times[after] - cut) / MS_PER_DAY if after < len(times) else None,
                "x": frequency - 1,
                "t_x": (last - first) / MS_PER_DAY,
                "T": (cut - first) / MS_PER_DAY,
                "served": shard.churn_risk(profile, cut),
                "basis": engine.hub.basis(profile),
                "served_days": engine.models.next_purchase_in_days(profile, cut, gap_days),
                "served_if_return": engine.models.next_purchase_if_return_in_days(profile, cut, gap_days),
                "served_expected": engine.hub.expected_purchases(profile, cut, horizon_days),
                "recency": recency_churn_score(recency, horizon_days),
                "frequency": frequency_churn_score(frequency),
                "rhythm": rhythm.churn_risk(frequency, profile["gap_mean_days"], recency, horizon_days, gap_days),
                "gap_days": max(0.0, rhythm.typical_gap_days(frequency, profile["gap_mean_days"], gap_days) - recency),
                "customer": customer,
                "last": last,
                "high_value": profile["monetary"] >= shard.thresholds().high_value,
            }
        )
    x = np.array([r["x"] for r in rows], dtype=float)
    t_x = np.array([r["t_x"] for r in rows], dtype=float)
    T = np.array([r["T"] for r in rows], dtype=float)
    fits = {model: bgnbd.fit(x, t_x, T, model=model) for model in bgnbd.MODELS}
    for r in rows:
        for model, params in fits.items():
            r[model] = bgnbd.p_none(params, r["x"], r["t_x"], r["T"], horizon_days, model)
        within = max(4 * horizon_days, 90.0)  # as the engine's streaming BG/NBD (models/bgnbd_stream.py)
        alive = bgnbd.p_alive(fits[bgnbd.BGNBD], r["x"], r["t_x"], r["T"])
        r["bgnbd_if_return"] = bgnbd.median_days_to_next(fits[bgnbd.BGNBD], r["x"], r["T"], within)
        r["bgnbd_days"] = alive * r["bgnbd_if_return"] + (1 - alive) * within
        r["bgnbd_expected"] = bgnbd.expected_purchases(fits[bgnbd.BGNBD], r["x"], r["t_x"], r["T"], horizon_days)
    labels = [r["churned"] for r in rows]
    churn = {
        source: {"auc": auc(labels, [r[source] for r in rows]), "brier": brier(labels, [r[source] for r in rows])}
        for source in CUT_SOURCES
    }
    observed = [r for r in rows if r["next_days"] is not None]
    day_sources = (("served", "served_days"), ("mean_gap", "gap_days"), ("bgnbd", "bgnbd_days"))
    # On observed gaps, the question is "when, given they come back": the served answer to it is the estimate if
    # the customer returns (models/hub.py), against BG/NBD's own (its median among futures with a purchase within W).
    if_return = (("served_if_return", "served_if_return"), ("bgnbd_if_return", "bgnbd_if_return"))
    days = {
        source: float(np.mean([abs(r[key] - r["next_days"]) for r in observed])) if observed else None
        for source, key in day_sources + if_return
    }
    # As the progressive protocol counts them: a next purchase within W of the cut (beyond W: censored). At 30 days
    # (W = 120) the log's next purchases reach 500 days, which no estimate of "within W" is for.
    within = [r for r in observed if r["next_days"] <= max(4 * horizon_days, 90.0)]
    days_within = {
        source: float(np.mean([abs(r[key] - r["next_days"]) for r in within])) if within else None
        for source, key in day_sources + if_return
    }
    # Customers with no purchase until the log ends: only "more than the days left" is known; the shortfall below that
    # is a lower bound of the error (on observed gaps alone, "soon" for everyone looks good).
    left = (end_ms - cut) / MS_PER_DAY
    days_with_censored = {
        source: float(
            np.mean([abs(r[key] - r["next_days"]) if r["next_days"] is not None else max(0.0, left - r[key]) for r in rows])
        )
        for source, key in day_sources
    }
    actual = np.array([r["purchases"] for r in rows], dtype=float)
    expected = {
        source: {
            "sum": float(np.sum([r[key] for r in rows])),
            "mae": float(np.mean(np.abs(np.array([r[key] for r in rows]) - actual))),
        }
        for source, key in (("served", "served_expected"), ("bgnbd", "bgnbd_expected"))
    }
    flagged_at: dict[str, int] = {}
    window = cut - ALERT_WINDOW_DAYS * MS_PER_DAY
    for alert in engine.alerts:
        at = _alert_ms(alert)
        if window < at <= cut:
            flagged_at[alert["customer_id"]] = at
    return {
        "week": week,
        "customers": len(rows),
        "churn_rate": float(np.mean(labels)),
        "too_little_data": sum(r["basis"] == "too_little_data" for r in rows),
        "served_basis": max({r["basis"] for r in rows}, key=lambda b: sum(r["basis"] == b for r in rows)) if rows else None,
        "churn": churn,
        "calibration": {
            "served": calibration(labels, [r["served"] for r in rows]),
            "bgnbd": calibration(labels, [r["bgnbd"] for r in rows]),
        },
        "next_purchase": {
            "observed": len(observed),
            "mae": days,
            "mae_with_censored": days_with_censored,
            "within_window": len(within),
            "mae_within_window": days_within,
        },
        "expected_purchases": {"actual_sum": float(actual.sum()), **expected},
        "alerts": alert_lift(rows, flagged_at),
        "fits": {model: dict(params._asdict()) for model, params in fits.items()},
    }


def alert_lift(rows: Sequence[dict[str, Any]], flagged_at: dict[str, int]) -> dict[str, Any]:
    """The churn rate of the customers called (flagged at ``flagged_at[customer]`` and not bought since), against
    the high-value customers' (the pool calls are drawn from) and everyone's.

    Calls go only to high-value customers (operators/rules/churn_risk.py), so whether they are aimed at the ones
    who leave is their churn rate against that pool's. Against everyone's (on CDNOW four in five are not high-value,
    mostly one-time buyers who churn more, and no call ever goes to them), a call reads as aimed wrong for a reason
    targeting cannot change.

    >>> rows = [{"customer": c, "last": 0, "churned": y, "high_value": hv}
    ...         for c, y, hv in [("a", True, True), ("b", False, True), ("c", False, True), ("d", True, False)]]
    >>> a = alert_lift(rows, {"a": 5})
    >>> a["churn_rate"], round(a["high_value_rate"], 3), a["lift_high_value"], a["lift"]
    (1.0, 0.333, 3.0, 2.0)
    """
    alerted = [r["churned"] for r in rows if r["customer"] in flagged_at and r["last"] <= flagged_at[r["customer"]]]
    pool = [r["churned"] for r in rows if r["high_value"]]
    rate = float(np.mean(alerted)) if alerted else None
    base = float(np.mean([r["churned"] for r in rows])) if rows else None
    pool_rate = float(np.mean(pool)) if pool else None
    return {
        "alerted": len(alerted),
        "churn_rate": rate,
        "base_rate": base,
        "lift": rate / base if rate is not None and base else None,
        "high_value": len(pool),
        "high_value_rate": pool_rate,
        "lift_high_value": rate / pool_rate if rate is not None and pool_rate else None,
    }


def _alert_ms(alert: dict[str, Any]) -> int:
    from crm_stream.operators.events.timeutil import parse_ts

    return int(parse_ts(alert["ts"]))


# -- the report --------------------------------------------------------------------------------


def format_report(results: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    lines.append("Churn at cut dates: AUC (Brier), customers scored as of the cut, label = no purchase in the horizon")
    head = f"{'horizon':>7} {'week':>4} {'cust':>6} {'churn':>6} " + " ".join(f"{s:>15}" for s in CUT_SOURCES)
    lines.append(head)
    for result in results:
        for cut in result["cuts"]:
            cells = " ".join(f"{cut['churn'][s]['auc']:>7.3f} ({cut['churn'][s]['brier']:.3f})".rjust(15) for s in CUT_SOURCES)
            lines.append(f"{result['horizon_days']:>7g} {cut['week']:>4} {cut['customers']:>6} {cut['churn_rate']:>6.1%} {cells}")
    lines.append("")
    lines.append("Progressive (test-then-train; points = purchases and checks of silent customers): churn AUC (Brier)")
    lines.append(f"{'horizon':>7} {'labels':>7} {'churn':>6} " + " ".join(f"{s:>15}" for s in CHURN_SOURCES) + "  serving")
    for result in results:
        churn = result["progressive"]["churn"]
        cells = " ".join(f"{churn[s]['auc']:.4f} ({churn[s]['brier']:.4f})".rjust(15) for s in CHURN_SOURCES)
        hub = result["progressive"]["hub"]
        lines.append(
            f"{result['horizon_days']:>7g} {churn['labels']:>7} {churn['positive_rate']:>6.1%} {cells}  "
            f"{hub['serving']['churn']}/{hub['serving']['next_purchase']} ({hub['guard_switches']} switches)"
        )
    lines.append("Served minus each, paired on the same labels: AUC difference (standard error, DeLong; labels taken as")
    lines.append("independent, which a customer's labels are not: a lower bound)")
    for result in results:
        paired = result["progressive_served_minus"]
        cells = ", ".join(f"{name} {p['difference']:+.4f} ({p['standard_error']:.4f})" for name, p in paired.items())
        lines.append(f"{result['horizon_days']:>7g}  {cells}")
    lines.append("")
    lines.append("Next purchase, MAE in days: at cuts (customers whose next purchase is in the log) and progressive")
    lines.append("(observed gaps: 'if return' = the served days if the customer buys again within W = max(4 x horizon,")
    lines.append(" 90 days), against BG/NBD's median among those futures; 'served' and 'BG/NBD' = the estimates for")
    lines.append(" everyone, P(gone) x W included. With censored: also every customer with no purchase until the log")
    lines.append(" ends, scored by the shortfall; progressive: every gap censored at W, scored by the shortfall)")
    lines.append(
        f"{'horizon':>7} {'week':>5} {'n':>6} {'if return':>9} {'mean gap':>9} {'BG/NBD if ret':>13} {'served':>7} {'BG/NBD':>7}"
        f" | {'with censored: served':>22} {'mean gap':>9} {'BG/NBD':>8}"
    )
    for result in results:
        for cut in result["cuts"]:
            m = cut["next_purchase"]["mae"]
            c = cut["next_purchase"]["mae_with_censored"]
            lines.append(
                f"{result['horizon_days']:>7g} {cut['week']:>5} {cut['next_purchase']['observed']:>6} "
                f"{m['served_if_return']:>9.1f} {m['mean_gap']:>9.1f} {m['bgnbd_if_return']:>13.1f} {m['served']:>7.1f} {m['bgnbd']:>7.1f}"
                f" | {c['served']:>22.1f} {c['mean_gap']:>9.1f} {c['bgnbd']:>8.1f}"
            )
        days = result["progressive"]["next_purchase"]
        lines.append(
            f"{result['horizon_days']:>7g} {'prog':>5} {days['observed']:>6} {days['if_return']['mae']:>9.1f} "
            f"{days['gap']['mae']:>9.1f} {'-':>13} {days['served']['mae']:>7.1f} {days['bgnbd']['mae']:>7.1f} | "
            f"{days['served']['mae_with_censored']:>22.1f} {days['gap']['mae_with_censored']:>9.1f} "
            f"{days['bgnbd']['mae_with_censored']:>8.1f}   (model {days['model']['mae']:.1f} / "
            f"{days['model']['mae_with_censored']:.1f}, rhythm {days['rhythm']['mae']:.1f} / {days['rhythm']['mae_with_censored']:.1f})"
        )
    lines.append("Next purchase within W of the cut (as the progressive protocol counts them), MAE in days")
    lines.append(
        f"{'horizon':>7} {'week':>5} {'n':>6} {'if return':>9} {'mean gap':>9} {'BG/NBD if ret':>13} {'served':>7} {'BG/NBD':>7}"
    )
    for result in results:
        for cut in result["cuts"]:
            m = cut["next_purchase"]["mae_within_window"]
            lines.append(
                f"{result['horizon_days']:>7g} {cut['week']:>5} {cut['next_purchase']['within_window']:>6} "
                f"{m['served_if_return']:>9.1f} {m['mean_gap']:>9.1f} {m['bgnbd_if_return']:>13.1f} {m['served']:>7.1f} {m['bgnbd']:>7.1f}"
            )
    lines.append("")
    lines.append("Purchases in the horizon after the cut: sum and per-customer MAE (served = the engine's streaming BG/NBD)")
    lines.append(f"{'horizon':>7} {'week':>5} {'actual':>8} {'served':>17} {'BG/NBD at cut':>17}")
    for result in results:
        for cut in result["cuts"]:
            e = cut["expected_purchases"]
            lines.append(
                f"{result['horizon_days']:>7g} {cut['week']:>5} {e['actual_sum']:>8.0f} "
                f"{e['served']['sum']:>8.0f} ({e['served']['mae']:.3f}) {e['bgnbd']['sum']:>8.0f} ({e['bgnbd']['mae']:.3f})"
            )
    lines.append("")
    lines.append(
        f"churn_risk service alerts: customers alerted in the {ALERT_WINDOW_DAYS:g} days before the cut (not bought since)"
    )
    lines.append("(calls go only to high-value customers: 'high-value' is that pool's churn rate, the lift is against it;")
    lines.append(" 'all' is every customer's, most of them one-time buyers no call is for)")
    lines.append(
        f"{'horizon':>7} {'week':>5} {'alerted':>8} {'churn':>7} {'high-value':>16} {'lift':>6} {'all':>7} {'lift':>6}"
        "   (alerts in the run)"
    )
    for result in results:
        for cut in result["cuts"]:
            a = cut["alerts"]
            rate = f"{a['churn_rate']:.1%}" if a["churn_rate"] is not None else "-"
            lift = f"{a['lift']:.2f}" if a["lift"] is not None else "-"
            pool = f"{a['high_value_rate']:.1%} of {a['high_value']}" if a["high_value_rate"] is not None else "-"
            pool_lift = f"{a['lift_high_value']:.2f}" if a["lift_high_value"] is not None else "-"
            lines.append(
                f"{result['horizon_days']:>7g} {cut['week']:>5} {a['alerted']:>8} {rate:>7} {pool:>16} {pool_lift:>6}"
                f" {a['base_rate']:>7.1%} {lift:>6}   ({result['service_alerts']} to {result['alerted_customers']} customers)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cdnow", help="CDNOW_master.txt or a Lifetimes-*.whl holding it (default: the installed lifetimes package)"
    )
    parser.add_argument("--horizons", default="30,90", help="churn horizons in days, comma-separated (default 30,90)")
    parser.add_argument("--cuts", default="26,39,52", help="cut dates in weeks after 1997-01-01 (default 26,39,52)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sample",
        type=float,
        default=1.0,
        help="keep this share of customers (a fixed hash sample), for quick looks; default all",
    )
    parser.add_argument("--out", help="also write the results as JSON here (nothing is written by default)")
    args = parser.parse_args(argv)
    purchases, counts = cdnow.parse_with_counts(cdnow.read_lines(args.cdnow))
    if args.sample < 1.0:
        purchases = [p for p in purchases if zlib.crc32(p.customer_id.encode()) % 10_000 < args.sample * 10_000]
    customers = len({p.customer_id for p in purchases})
    print(
        f"CDNOW: {counts['lines']} lines -> {len(purchases)} customer-day purchases of {customers} customers "
        f"({counts['dropped_non_positive']} non-positive days left out)",
        file=sys.stderr,
    )
    results = []
    for horizon in (float(h) for h in args.horizons.split(",")):
        results.append(
            evaluate_horizon(
                purchases,
                horizon,
                [int(w) for w in args.cuts.split(",")],
                seed=args.seed,
                progress=lambda line: print(line, file=sys.stderr),
            )
        )
        print(f"  horizon {horizon:g}: {results[-1]['seconds']} s", file=sys.stderr)
    print(format_report(results))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"data": {"purchases": len(purchases), "customers": customers, **counts}, "results": results}, fh, indent=1)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "KeepingValidation",
    "alert_lift",
    "auc",
    "brier",
    "calibration",
    "evaluate_horizon",
    "format_report",
    "main",
    "paired_auc_difference",
]
