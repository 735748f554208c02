"""load.generate: paced, bounded, bursty load with the mix asked for (no timing assertions: the clock is injected)."""

from __future__ import annotations

import pytest

from crm_stream.config import settings as config
from crm_stream.operators.events.schema import DeadLetter, Decoder, Origin
from load.generate import MIXES, Bursts, due_events, run
from load.generator import EventGenerator


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_paced_load_sends_what_is_due_and_stops_at_the_time_bound():
    clock, sent = FakeClock(), []
    result = run(
        EventGenerator(1000, seed=3),
        lambda *r: sent.append(r),
        rate=2000,
        max_events=None,
        max_seconds=2.0,
        clock=clock,
        sleep=clock.sleep,
    )
    assert result["events"] == len(sent)
    assert 3980 <= len(sent) <= 4000  # 2 s at 2000/s, the last tick's share at most short


def test_bursts_raise_the_rate_only_inside_their_window():
    clock, sent = FakeClock(), []
    run(
        EventGenerator(1000, seed=3),
        lambda *r: sent.append(r),
        rate=1000,
        max_events=None,
        max_seconds=10.0,
        bursts=Bursts.parse("5,5,1"),
        clock=clock,
        sleep=clock.sleep,
    )
    assert abs(len(sent) - due_events(10.0, 1000, Bursts(5, 5, 1))) <= 1000 * 5 * 0.01
    assert due_events(10.0, 1000, Bursts(5, 5, 1)) == 18_000  # 10 s at 1000/s plus two 1 s windows at 4000/s extra


def test_the_count_bound_is_exact_and_every_event_decodes():
    sent = []
    result = run(
        EventGenerator(50, seed=1, weights=MIXES["support-heavy"]),
        lambda *r: sent.append(r),
        rate=0,
        max_events=3000,
        max_seconds=None,
    )
    assert result["events"] == len(sent) == 3000
    settings = config.load(None, env={})
    decoder = Decoder(settings.currency_rates, settings.engine.base_currency, settings.kafka.max_message_bytes)
    assert not any(isinstance(decoder.decode(v, Origin(role, 0, i)), DeadLetter) for i, (role, _, v) in enumerate(sent))
    support = sum(1 for role, _, _ in sent if role == "support") / len(sent)
    assert support > 0.2  # the support-heavy mix, not the default ~5%


def test_unbounded_load_and_bad_bursts_are_refused():
    with pytest.raises(ValueError):
        run(EventGenerator(10), lambda *r: None, rate=100, max_events=None, max_seconds=None)
    with pytest.raises(ValueError):
        Bursts.parse("4,2,3")
