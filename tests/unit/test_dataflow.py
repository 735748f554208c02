"""The real dataflow on Bytewax's runtime: single worker and a 2-worker cluster."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from bytewax.testing import cluster_main, run_main

from crm_stream.config import settings as config
from crm_stream.flows.dataflow import build_flow
from crm_stream.flows.runtime import replay
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.files import CollectingOutputs, FileReader
from crm_stream.operators.io.interface import DEADLETTER
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import MemoryStore
from tests.events import event, lines, purchase, view

SETTINGS = config.load(None, env={})


def stream():
    evs = []
    for i in range(40):
        cid = f"c{i}"
        evs.append(view(cid, category="coffee" if i % 2 else "tea", day=i * 0.1))
        evs.append(purchase(cid, amount=10 + i, day=1 + i * 0.1))
        evs.append(purchase(cid, amount=5, day=11 + i * 0.1))
    # a visitor who browses anonymously, then logs in
    evs.append(event("product_view", None, day=20, anonymous_id="anon-1", product_id="p9", category="books"))
    evs.append(event("add_to_cart", None, day=20.01, anonymous_id="anon-1", product_id="p9", category="books", price=30.0))
    evs.append(event("identify", "c7", day=20.02, anonymous_id="anon-1"))
    evs.append(event("page_view", None, day=20.03, anonymous_id="anon-1", url="/after-login"))
    dup = purchase("c3", amount=99, day=21)
    evs += [dup, dup]
    evs.sort(key=lambda e: e["ts"])
    return evs


def run_flow(path, runner, settings=SETTINGS):
    store, outputs = MemoryStore(), CollectingOutputs()
    flow = build_flow(
        settings, reader=FileReader(path, batch_size=7), outputs_factory=lambda w: outputs, store_provider=lambda: store
    )
    runner(flow)
    keys = KeySpace(SETTINGS.store.key_prefix)
    profiles = dict(store.scan(keys.profile_prefix))
    return profiles, outputs


@pytest.fixture()
def events_file(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(lines(stream()) + b"garbage line\n")
    return path


def _summary(profiles):
    return {
        k: (p["frequency"], p["monetary"], p["events"], sorted(p["cart"]), sorted(p["interests"])) for k, p in profiles.items()
    }


def test_single_worker_builds_profiles_merges_visitors_and_dead_letters(events_file):
    profiles, outputs = run_flow(events_file, lambda f: run_main(f, epoch_interval=timedelta(seconds=1)))
    assert len(profiles) == 40
    c7 = profiles["crm:profile:c7"]
    assert "p9" in c7["cart"] and "books" in c7["interests"]  # pre-login activity is part of the customer
    assert c7["type_counts"]["page_view"] == 1  # anonymous event after identify follows the link
    assert c7["anonymous_ids"] == ["anon-1"]
    assert profiles["crm:profile:c3"]["frequency"] == 3  # the duplicate counted once
    dead = [jsonutil.loads(v) for v in outputs.records[DEADLETTER]]
    assert len(dead) == 1 and dead[0]["line"] == len(stream()) + 1


def test_two_worker_cluster_gives_the_same_profiles(events_file):
    single, _ = run_flow(events_file, lambda f: run_main(f, epoch_interval=timedelta(seconds=1)))
    cluster, outputs = run_flow(
        events_file, lambda f: cluster_main(f, [], 0, worker_count_per_proc=2, epoch_interval=timedelta(seconds=1))
    )
    assert _summary(cluster) == _summary(single)
    assert len(outputs.records[DEADLETTER]) == 1


def test_replay_is_byte_identical_and_follows_the_contract(events_file, tmp_path):
    outs = []
    for run in ("a", "b"):
        paths = {name: tmp_path / f"{name}-{run}.jsonl" for name in ("alerts", "profiles", "dead")}
        replay(SETTINGS, events_file, alerts_out=paths["alerts"], profiles_out=paths["profiles"], deadletter_out=paths["dead"])
        outs.append({name: p.read_bytes() for name, p in paths.items()})
    assert outs[0] == outs[1]
    rows = [jsonutil.loads(line) for line in outs[0]["profiles"].splitlines()]
    assert [r["customer_id"] for r in rows] == sorted(r["customer_id"] for r in rows)
    for row in rows:
        assert set(row) >= {
            "customer_id",
            "segment",
            "recency_days",
            "frequency",
            "monetary",
            "churn_risk",
            "next_purchase_in_days",
        }
        assert 0.0 <= row["churn_risk"] <= 1.0 and row["next_purchase_in_days"] >= 0
    dead = [jsonutil.loads(line) for line in outs[0]["dead"].splitlines()]
    assert set(dead[0]) == {"reason", "topic", "line", "raw"}


def test_replay_reports_its_timers_by_kind_and_the_models_points(events_file, tmp_path):
    outs = {"alerts_out": tmp_path / "a.jsonl", "profiles_out": tmp_path / "p.jsonl"}
    summary = replay(SETTINGS, events_file, **outs)
    assert summary.timers_fired.get("segment", 0) > 0 and all(n > 0 for n in summary.timers_fired.values())
    assert summary.prediction_points > 0
    off = dataclasses.replace(SETTINGS, models=dataclasses.replace(SETTINGS.models, enabled=False))
    assert replay(off, events_file, **outs).prediction_points == 0


def test_replay_churn_horizon_changes_churn_risk(events_file, tmp_path):
    risks = []
    for horizon in (7, 90):
        out = tmp_path / f"p{horizon}.jsonl"
        replay(SETTINGS, events_file, alerts_out=tmp_path / "a.jsonl", profiles_out=out, churn_horizon_days=horizon)
        risks.append({r["customer_id"]: r["churn_risk"] for r in map(jsonutil.loads, out.read_bytes().splitlines())})
    assert all(risks[0][c] > risks[1][c] for c in risks[0])


class _ResumeAt:
    """A reader restarted from an older position than where the last run got to, as after a crash."""

    def __init__(self, reader, line):
        self.reader, self.line = reader, line

    def partitions(self):
        return self.reader.partitions()

    def open(self, partition, position):
        return self.reader.open(partition, self.line)


def test_restart_resumes_from_the_store_without_double_counting(tmp_path):
    """Crash recovery at the state level: re-reading from an older position, on the same store, counts nothing twice,
    even when the re-read span is far longer in event time than any dedup window."""
    evs = stream()
    whole, first = tmp_path / "whole.jsonl", tmp_path / "first.jsonl"
    whole.write_bytes(lines(evs))
    first.write_bytes(lines(evs[: len(evs) // 2]))  # the run that "crashed" half way
    tiny_window = config.load(None, env={"CRM_STREAM__ENGINE__DEDUP_MAX_IDS": "1"})
    store = MemoryStore()
    for reader in (FileReader(first, 5), _ResumeAt(FileReader(whole, 5), len(evs) // 4)):
        flow = build_flow(tiny_window, reader=reader, outputs_factory=lambda w: CollectingOutputs(), store_provider=lambda: store)
        run_main(flow, epoch_interval=timedelta(seconds=1))
    expected, _ = run_flow(whole, lambda f: run_main(f, epoch_interval=timedelta(seconds=1)), tiny_window)
    got = dict(store.scan("crm:profile:"))
    assert _summary(got) == _summary(expected)


def test_bytewax_testing_source_feeds_the_same_flow():
    from bytewax.testing import TestingSource

    from crm_stream.operators.io.interface import Raw

    evs = stream()
    raws = [Raw("crm.clickstream", 0, i, jsonutil.dumps(e)) for i, e in enumerate(evs)]
    batches = [raws[i : i + 10] for i in range(0, len(raws), 10)]
    store, outputs = MemoryStore(), CollectingOutputs()
    flow = build_flow(SETTINGS, reader=TestingSource(batches), outputs_factory=lambda w: outputs, store_provider=lambda: store)
    run_main(flow)
    assert len(dict(store.scan("crm:profile:"))) == 40


def test_a_bug_in_profile_logic_dead_letters_the_event_and_the_engine_goes_on(events_file, monkeypatch):
    from crm_stream.operators.profile import state as profiles

    original = profiles._HANDLERS["purchase"]

    def broken(profile, event, rules):
        if event["customer_id"] == "c5":
            raise ZeroDivisionError("boom")
        original(profile, event, rules)

    monkeypatch.setitem(profiles._PLAN, "purchase", (*profiles._PLAN["purchase"][:2], broken))
    got, outputs = run_flow(events_file, lambda f: run_main(f, epoch_interval=timedelta(seconds=1)))
    assert len(got) == 40
    reasons = [jsonutil.loads(v)["reason"] for v in outputs.records[DEADLETTER]]
    assert sum("internal error applying purchase" in r and "boom" in r for r in reasons) == 2


def test_two_replays_of_the_shop_raise_the_same_alerts_with_the_same_ids(tmp_path):
    from crm_stream.operators.events.simulator import Shop

    events = tmp_path / "shop.jsonl"
    Shop(config.SimulatorSettings(customers=60, days=120, seed=3)).write_files(events)
    runs = []
    for n in range(2):
        alerts = tmp_path / f"alerts{n}.jsonl"
        replay(SETTINGS, events, alerts_out=alerts, profiles_out=tmp_path / f"p{n}.jsonl")
        runs.append(alerts.read_bytes())
    assert runs[0] == runs[1]
    kinds = {jsonutil.loads(line)["kind"] for line in runs[0].splitlines()}
    assert {"angry_customer", "abandoned_interest"} <= kinds


def test_a_restart_resumes_the_models_from_their_snapshot(tmp_path):
    """The online models are snapshotted to the store at the end of input and read back by the next run."""
    from crm_stream.operators.events.simulator import Shop

    events = tmp_path / "shop.jsonl"
    Shop(config.SimulatorSettings(customers=80, days=150, seed=4)).write_files(events)
    store, shards = MemoryStore(), {}
    flow = build_flow(
        SETTINGS,
        reader=FileReader(events),
        outputs_factory=lambda w: CollectingOutputs(),
        store_provider=lambda: store,
        shard_registry=shards,
    )
    run_main(flow)
    hub = next(iter(shards.values())).models.hub
    assert hub.n_learned > 0 and store.get_many(["crm:model:customer"])[0]
    restarted = {}
    flow = build_flow(
        SETTINGS,
        reader=FileReader(events),
        outputs_factory=lambda w: CollectingOutputs(),
        store_provider=lambda: store,
        shard_registry=restarted,
    )
    run_main(flow)
    resumed = next(iter(restarted.values())).models.hub
    assert resumed is not hub and resumed.n_learned >= hub.n_learned


def test_the_profile_shards_of_a_process_end_together():
    """At the end of input the last shard to end finishes them all (``Stages.end``): a shard finished alone, before
    another had reported the last day, left that day's segment checks held with no later advance to fire them."""
    from crm_stream.operators.events.router import shard_key
    from crm_stream.operators.profile.state import SOURCE, SOURCE_OFFSET
    from crm_stream.operators.stages.learning import SharedModels
    from crm_stream.operators.stages.pipeline import Stages, ToProfiles

    settings = config.load(None, env={})
    store, keys = MemoryStore(), KeySpace("crm")
    models = SharedModels(store, keys, settings.models)
    stages = Stages(settings, lambda: store, keys, models=lambda: models)
    for n in (0, 1):
        bought = dict(purchase(f"c{n}", day=n), amount_base=20.0, **{SOURCE: "file#-1", SOURCE_OFFSET: n})
        stages.apply(n, [ToProfiles(shard_key(n), [bought], {"file#-1": bought["ts"]})])
    assert stages.end(1) == [] and not stages.profile_shards[1].event_clock.ended  # shard 0 has not ended yet
    assert stages.end(0)  # the last: every shard finished, their effects returned here
    assert all(shard.event_clock.ended for shard in stages.profile_shards.values())
