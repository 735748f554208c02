"""The simulated shop: contract-valid, ordered, deterministic, and its truth matches what it emitted."""

from __future__ import annotations

import collections
import doctest
from typing import Any

import pytest

from crm_stream.config.settings import SimulatorSettings
from crm_stream.operators.events import simulator
from crm_stream.operators.events.schema import TOPIC_OF_TYPE, DeadLetter, Decoder, Origin
from crm_stream.operators.events.simulator import PERSONAS, Shop, SimulatorReader
from crm_stream.operators.events.timeutil import MS_PER_DAY, parse_ts
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import Raw

RATES = {"USD": 1, "EUR": 1.08, "CNY": 0.138, "GBP": 1.27, "JPY": 0.0066, "CAD": 0.73}
SMALL = SimulatorSettings(customers=60, days=60, seed=3)


def decode(value: bytes) -> dict[str, Any] | DeadLetter:
    return Decoder(RATES).decode(value, Origin("t", 0, 0))


@pytest.fixture(scope="module")
def default_run() -> tuple[Shop, list[dict[str, Any]], list[dict[str, Any]]]:
    """One run with the default settings, shared: events and truth."""
    shop = Shop(SimulatorSettings())
    return shop, list(shop.events()), list(shop.truth())


def test_module_docstring_examples_run() -> None:
    assert doctest.testmod(simulator).failed == 0


def test_same_seed_gives_same_bytes_and_another_seed_differs() -> None:
    first = list(Shop(SMALL).records())
    assert first == list(Shop(SMALL).records())
    other = SimulatorSettings(customers=60, days=60, seed=4)
    assert [v for _, _, v in Shop(other).records()][:50] != [v for _, _, v in first][:50]


def test_every_record_decodes_in_time_order_with_role_and_key() -> None:
    last = 0
    records = list(Shop(SMALL).records())
    assert len(records) > 1000
    for role, key, value in records:
        event = decode(value)
        assert not isinstance(event, DeadLetter), event
        assert role == TOPIC_OF_TYPE[event["type"]]
        assert key == (event.get("customer_id") or event["anonymous_id"])
        assert event["ts"] >= last
        last = event["ts"]


def test_both_time_formats_and_several_offsets_appear(default_run: Any) -> None:
    _, events, _ = default_run
    stamps = [e["ts"] for e in events]
    assert any(isinstance(ts, int) for ts in stamps)
    suffixes = {ts[-6:] for ts in stamps if isinstance(ts, str)}
    assert {"+08:00", "-05:00"} <= suffixes and any(s.endswith("Z") for s in suffixes)


def test_malformed_records_are_inserted_without_disturbing_the_good_stream() -> None:
    good = list(Shop(SMALL).records())
    noisy = list(Shop(SimulatorSettings(customers=60, days=60, seed=3, bad_rate=0.05)).records())
    # Walk both: whatever is in the noisy stream but not the clean one is malformed.
    malformed, i = [], 0
    for record in noisy:
        if i < len(good) and record == good[i]:
            i += 1
        else:
            malformed.append(record)
    assert i == len(good)
    assert 0.03 < len(malformed) / len(noisy) < 0.07
    reasons = collections.Counter()
    for role, _, value in malformed:
        assert role in ("clickstream", "purchases", "support", "control")
        dead = decode(value)
        assert isinstance(dead, DeadLetter), value
        reasons[dead.reason.split(":")[0]] += 1
    assert len(reasons) >= 4  # several causes, not one


def test_each_persona_is_present_with_default_settings() -> None:
    personas = collections.Counter(line["persona"] for line in Shop(SimulatorSettings()).customers())
    assert set(personas) == set(PERSONAS)
    assert all(count >= 15 for count in personas.values()), personas


def test_customers_matches_the_truth_customer_lines(default_run: Any) -> None:
    shop, _, truth = default_run
    assert [t for t in truth if t["kind"] == "customer"] == list(shop.customers())


def test_identify_links_an_anonymous_id_seen_before_and_later_events_are_known() -> None:
    seen_anonymous, linked = set(), set()
    identifies = 0
    for event in Shop(SimulatorSettings(customers=80, days=60, seed=5, anonymous_share=0.5)).events():
        if event["type"] == "identify":
            identifies += 1
            assert event["anonymous_id"] in seen_anonymous
            linked.add(event["anonymous_id"])
        elif "customer_id" not in event:
            assert event["anonymous_id"] not in linked, "anonymous event after identify"
            assert event["type"] in ("page_view", "product_view", "search", "add_to_cart", "remove_from_cart")
            seen_anonymous.add(event["anonymous_id"])
    assert identifies >= 20


def test_duplicates_repeat_the_same_payload_and_are_in_the_truth() -> None:
    shop = Shop(SMALL, duplicate_rate=0.02)
    by_id: dict[str, list[bytes]] = collections.defaultdict(list)
    for _, _, value in shop.records():
        by_id[jsonutil.loads(value)["event_id"]].append(value)
    repeated = {event_id: values for event_id, values in by_id.items() if len(values) > 1}
    assert repeated and all(len(v) == 2 and v[0] == v[1] for v in repeated.values())
    truth = list(shop.truth())
    assert {t["event_id"] for t in truth if t.get("situation") == "duplicate_event"} == set(repeated)
    assert truth[-1]["kind"] == "summary" and truth[-1]["duplicates"] == len(repeated)


def test_purchase_amounts_match_items_and_refunds_reference_orders(default_run: Any) -> None:
    _, events, _ = default_run
    orders: dict[str, dict[str, Any]] = {}
    currencies = collections.Counter()
    refunds = 0
    for event in events:
        if event["type"] == "purchase":
            total = sum(item["price"] * item["quantity"] for item in event["items"])
            assert event["amount"] > 0 and abs(event["amount"] - total) < 0.005
            orders[event["order_id"]] = event
            currencies[event["currency"]] += 1
        elif event["type"] == "refund":
            refunds += 1
            order = orders[event["order_id"]]
            assert 0 < event["amount"] <= order["amount"] and event["currency"] == order["currency"]
    assert refunds > 20
    assert currencies.most_common(1)[0][0] == "USD" and {"EUR", "CNY"} <= set(currencies)


def test_truth_references_real_customers_products_and_tickets(default_run: Any) -> None:
    shop, events, truth = default_run
    customers = {t["customer_id"]: t for t in truth if t["kind"] == "customer"}
    assert len(customers) == 300
    tickets = {e["ticket_id"] for e in events if e["type"] == "ticket_opened"}
    kinds = collections.Counter()
    for line in truth:
        if line["kind"] != "situation":
            continue
        kinds[line["situation"]] += 1
        assert shop.start_ms <= parse_ts(line["ts"]) < shop.end_ms
        if "customer_id" in line:
            assert line["customer_id"] in customers
        if line["situation"] == "angry_customer":
            assert line["ticket_id"] in tickets and customers[line["customer_id"]]["persona"] == "angry"
        if line["situation"] == "abandoned_interest":
            assert line["category"] in customers[line["customer_id"]]["categories"]
        if line["situation"] == "churn":
            assert customers[line["customer_id"]]["churned_at"] == line["ts"]
        if "product_id" in line:
            assert line["product_id"] in {p.product_id for p in shop.products}
    assert set(kinds) == {
        "angry_customer",
        "abandoned_interest",
        "win_back",
        "replenishment",
        "return_spike",
        "churn",
        "duplicate_event",
    }
    assert all(c["churned_at"] for c in customers.values() if c["persona"] == "lapsing")
    assert all(c["cycle_days"] in (21, 30) for c in customers.values() if c["persona"] == "replenishment")


def test_personas_behave_as_their_truth_says(default_run: Any) -> None:
    shop, events, truth = default_run
    customers = {t["customer_id"]: t for t in truth if t["kind"] == "customer"}
    bought: dict[str, list[int]] = collections.defaultdict(list)
    for event in {e["event_id"]: e for e in events}.values():  # without redeliveries
        if event["type"] == "purchase":
            bought[event["customer_id"]].append(parse_ts(event["ts"]))
    for customer_id, line in customers.items():
        if line["persona"] == "browser":
            assert customer_id not in bought
        elif line["persona"] == "lapsing":
            assert all(ts < parse_ts(line["churned_at"]) for ts in bought[customer_id])
        elif line["persona"] == "replenishment" and len(bought[customer_id]) > 2:
            gaps = [(b - a) / MS_PER_DAY for a, b in zip(bought[customer_id], bought[customer_id][1:])]
            assert all(abs(gap - line["cycle_days"]) <= 3.5 for gap in gaps), (customer_id, gaps)


def test_return_spike_product_is_returned_far_more_after_the_spike(default_run: Any) -> None:
    shop, events, _ = default_run
    spike = shop.spike_product.product_id
    orders = {e["order_id"]: e for e in events if e["type"] == "purchase"}
    bought, returned = collections.Counter(), collections.Counter()
    for event in events:
        if event["type"] == "purchase":
            after = parse_ts(event["ts"]) >= shop.spike_at
            bought[after] += any(item["product_id"] == spike for item in event["items"])
        elif event["type"] == "refund" and event.get("reason", "").startswith("defective"):
            order = orders[event["order_id"]]
            assert any(item["product_id"] == spike for item in order["items"])
            returned[parse_ts(order["ts"]) >= shop.spike_at] += 1
    assert returned[False] == 0 and returned[True] >= 0.3 * bought[True] > 5


def test_support_texts_mix_angry_and_polite_in_two_languages(default_run: Any) -> None:
    _, events, truth = default_run
    personas = {t["customer_id"]: t["persona"] for t in truth if t["kind"] == "customer"}
    inbound = [e for e in events if e["type"] == "support_message" and e["direction"] == "inbound"]
    angry = [e["text"] for e in inbound if personas[e["customer_id"]] == "angry"]
    polite = [e["text"] for e in inbound if personas[e["customer_id"]] != "angry"]
    assert any("!!!" in t and t.isascii() for t in angry) and any(not t.isascii() for t in angry)
    assert any(t.isascii() for t in polite) and any(not t.isascii() for t in polite)
    assert not any("!!!" in t for t in polite)
    scores = [e["score"] for e in events if e["type"] == "survey" and personas[e["customer_id"]] == "angry"]
    assert scores and max(scores) <= 4


def test_write_files_writes_records_and_truth(tmp_path: Any) -> None:
    shop = Shop(SimulatorSettings(customers=20, days=20, seed=9, bad_rate=0.01))
    counts = shop.write_files(tmp_path / "events.jsonl", tmp_path / "truth.jsonl")
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert lines == [value for _, _, value in shop.records()]
    assert counts["records"] == len(lines) == counts["events"] + counts["duplicates"] + counts["malformed"]
    truth = [jsonutil.loads(line) for line in (tmp_path / "truth.jsonl").read_bytes().splitlines()]
    assert truth == list(shop.truth())
    assert truth[-1] == {"kind": "summary", **counts}


def read_all(part: Any) -> list[Raw]:
    out: list[Raw] = []
    while not part.done():
        out += part.read_batch()
    return out


def test_reader_resumes_at_a_position_with_the_same_remaining_records() -> None:
    reader = SimulatorReader(SMALL, batch_size=100, rate=0)
    assert reader.partitions() == ["simulator"]
    whole = read_all(reader.open("simulator", None))
    assert [r.offset for r in whole] == list(range(len(whole)))
    assert [(r.topic, r.value) for r in whole] == [(role, v) for role, _, v in Shop(SMALL).records()]
    part = reader.open("simulator", None)
    part.read_batch()
    part.read_batch()
    position = part.position()
    assert position == 200
    part.close()
    assert read_all(reader.open("simulator", position)) == whole[position:]
    with pytest.raises(ValueError):
        reader.open("other", None)


def test_paced_reader_releases_records_as_the_clock_allows() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    reader = SimulatorReader(SMALL, batch_size=1000, rate=100.0, sleep=sleep, clock=lambda: now[0])
    part = reader.open("simulator", None)
    # Nothing is due at the start: one short sleep until the first record, not a busy loop.
    assert len(part.read_batch()) == 1 and slept == [pytest.approx(0.01)]
    now[0] = 0.05
    assert len(part.read_batch()) == 4
    now[0] = 10.0  # far behind: still a small batch (0.1 s worth), so a live view stays smooth
    assert len(part.read_batch()) == 10
    assert part.position() == 15
