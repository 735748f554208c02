"""An erasure a crash cannot undo (issue 14, item 2): the model hub forgets, at start, the customers whose erasure the
shard records still guard, whatever the restored snapshot holds of them."""

from __future__ import annotations

from crm_stream.config.settings import ModelSettings
from crm_stream.models.hub import ModelHub
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import MemoryStore
from crm_stream.operators.privacy.erasure import erasure_token
from crm_stream.operators.stages.learning import SharedModels

KEYS = KeySpace("crm")


def _store_with(pending: list[str], guards: dict[int, list[str]]) -> MemoryStore:
    """A store as a kill -9 leaves it: a model snapshot with open predictions of ``pending``, and shard records whose
    erasure guards name (by hash) the customers in ``guards``."""
    hub = ModelHub(30.0, 0)
    for n, cid in enumerate(pending):
        hub.pending.add(cid, 1_000 + n, [0.5, 1.0], {"n": n})
    store = MemoryStore()
    store.write(
        {
            KEYS.model("customer"): hub.snapshot(),
            **{
                KEYS.shard(s): {"clock": 5, "erasures": {erasure_token(c): {"crm.control#0": 9} for c in ids}}
                for s, ids in guards.items()
            },
        }
    )
    return store


def test_customers_guarded_as_erased_leave_the_restored_hub_and_the_next_snapshot():
    store = _store_with(["c1", "c2", "c3"], {0: ["c1"], 3: ["c3", "never-had-pending"]})
    models = SharedModels(store, KEYS, ModelSettings(), 30.0, shards=4)
    assert models.hub is not None
    assert sorted(models.hub.pending.customer_ids()) == ["c2"]
    [(target, key, blob)] = models.advance(2_000)  # the first batch writes the snapshot without them, at once
    assert (target, key) == ("put", "crm:model:customer")
    assert ModelHub.restore(blob).pending.customer_ids() == ["c2"]


def test_no_guard_no_change_and_no_early_snapshot():
    store = _store_with(["c1", "c2"], {1: []})
    models = SharedModels(store, KEYS, ModelSettings(), 30.0, shards=4)
    assert sorted(models.hub.pending.customer_ids()) == ["c1", "c2"]  # type: ignore[union-attr]
    assert models.advance(2_000) == []


def test_without_the_shard_count_nothing_is_read():
    store = _store_with(["c1"], {0: ["c1"]})
    assert SharedModels(store, KEYS, ModelSettings(), 30.0).hub.pending.customer_ids() == ["c1"]  # type: ignore[union-attr]
