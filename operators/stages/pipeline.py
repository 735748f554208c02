"""The engine's steps as one pipeline, and the items that travel between them.

    raw batch ──Router.route──┬── (DEAD, dead-letter effects)
                              └── Routed(shard n) ──identity n── ToProfiles(shard m) ──profile shard m── effects
                                                        └── VisitorEffects (visitor buffers and links)

``Stages`` holds one process's stages, built on first use per shard number: identity shard n, profile shard n,
and what the profile shards share (segment thresholds, product refund rates, the online models).
``flows/dataflow.py`` calls ``Stages.identify`` and ``Stages.apply`` from Bytewax's stateful steps, one shard
per key; ``Stages.run`` calls the same two in a plain loop for a whole routed batch (``crm-stream evaluate``
and benchmarks), so both run the same code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from crm_stream.config.settings import Settings
from crm_stream.operators.events.router import DEAD, Routed, process_tag, shard_key, shard_number
from crm_stream.operators.io.interface import Effect, Store
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.profile.segments import ThresholdBoard
from crm_stream.operators.rules.return_spike import ReturnWatch
from crm_stream.operators.stages.identity import IdentityShard
from crm_stream.operators.stages.learning import SharedModels
from crm_stream.operators.stages.shard import ProfileShard

log = logging.getLogger(__name__)


class ToProfiles(NamedTuple):
    """An identity shard's events for one profile shard. ``clocks`` (input partition -> newest event time) goes
    only to the profile shard of the same number, so every profile shard hears each batch's clocks once."""

    shard_key: str
    events: list[dict[str, Any]]
    clocks: dict[str, int] | None
    origin: int = 0
    """``process_tag()`` of the identity step's process (see ``Routed.origin``)."""


class VisitorEffects(NamedTuple):
    """What an identity shard asks the sink to write (visitor buffers and links)."""

    effects: list[Effect]


class Crossing(NamedTuple):
    """What reached a stateful step from another process: Bytewax items, and the events they carry."""

    items: int
    events: int


def crossing(parts: list[Routed] | list[ToProfiles], here: int) -> Crossing:
    """Count the parts a step was given that another process made (their ``origin`` is not ``here``).

    >>> crossing([Routed(0, [{}, {}], {}, 7), Routed(0, [{}], {}, 9), Routed(0, [], {}, 7)], here=9)
    Crossing(items=2, events=2)
    """
    items = events = 0
    for part in parts:
        if part.origin != here:
            items += 1
            events += len(part.events)
    return Crossing(items, events)


def merge_clocks(parts: list[dict[str, int] | None]) -> dict[str, int]:
    """Several batches' partition clocks as one: the newest event time per partition.

    >>> merge_clocks([{"a": 1, "b": 5}, None, {"a": 3}])
    {'a': 3, 'b': 5}
    """
    if len(parts) == 1 and parts[0] is not None:
        return parts[0]
    merged: dict[str, int] = {}
    for clocks in parts:
        for source, ts in (clocks or {}).items():
            if ts > merged.get(source, -1):
                merged[source] = ts
    return merged


class Stages:
    """One process's identity and profile shards, and what the profile shards share."""

    def __init__(
        self,
        settings: Settings,
        store_provider: Callable[[], Store],
        keys: KeySpace,
        *,
        models: Callable[[], SharedModels],
        board: ThresholdBoard | None = None,
        returns: ReturnWatch | None = None,
        emit_changes: bool = False,
        registry: dict[int, ProfileShard] | None = None,
        expected_sources: Callable[[], list[str]] | None = None,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        """``expected_sources``: a live source's input partitions, which every profile shard's clock waits for;
        asked when the first profile shard is made (the source has listed them by then). ``shard_keys``: each
        shard's Bytewax key, by number (flows/placement.py); default ``shard_key(n)``."""
        shards = settings.engine.shards
        self.shard_keys = tuple(shard_keys) if shard_keys is not None else tuple(shard_key(s) for s in range(shards))
        self.settings, self.store_provider, self.keys = settings, store_provider, keys
        self._expected_sources = expected_sources
        self._expected: list[str] | None = None
        self.models = models
        self.board = board or ThresholdBoard(settings.segments)
        self.returns = returns or ReturnWatch()  # product-level refund rates, shared by the shards of this process
        self.emit_changes = emit_changes
        self.identities: dict[int, IdentityShard] = {}
        self.profile_shards: dict[int, ProfileShard] = {} if registry is None else registry
        self._threads: set[int] = set()
        """The worker threads that made this process's profile shards (``end``)."""
        self._ended: set[int] = set()
        self._end_lock = threading.Lock()

    def identity(self, number: int) -> IdentityShard:
        found = self.identities.get(number)
        if found is None:
            e = self.settings.engine
            found = self.identities[number] = IdentityShard(
                self.store_provider(), self.keys, e.shards, e.anonymous_max_events, self.settings.kafka.max_message_bytes
            )
        return found

    def profiles(self, number: int) -> ProfileShard:
        found = self.profile_shards.get(number)
        if found is None:
            found = self.profile_shards[number] = ProfileShard(
                number,
                self.settings,
                self.store_provider(),
                self.keys,
                emit_changes=self.emit_changes,
                board=self.board,
                returns=self.returns,
                models=self.models(),
                expected_sources=self._sources(),
            )
            self._threads.add(threading.get_ident())
        return found

    def end(self, number: int) -> list[Effect]:
        """The input ended for profile shard ``number`` (not a stop): fire what is due by the last event.

        A shard finished alone fires its timers while a shard still to end may hold the last day's segment lines
        back, and its segment checks then wait for an advance that never comes (how many depended on the order the
        shards ended in). So, when one worker thread holds them all (the default: one per process), the shards end
        together: the last to end finishes every shard of the process in shard order, and again, so that checks held
        for the lines the first round completed fire too. With several worker threads each shard finishes itself:
        another thread's shard may still be writing.
        """
        with self._end_lock:
            self._ended.add(number)
            if len(self._threads) > 1:
                return self.profile_shards[number].finish()
            if not self._ended >= set(self.profile_shards):
                return []
            effects: list[Effect] = []
            for _ in range(2):
                for n in sorted(self.profile_shards):
                    effects.extend(self.profile_shards[n].finish())
            return effects

    def _sources(self) -> list[str] | None:
        if self._expected is None and self._expected_sources is not None:
            try:
                self._expected = list(self._expected_sources())
            except Exception:  # the source's own listing reports a broker that does not answer; the clock copes
                log.warning("could not list the input partitions: the event-time clock learns them as they deliver")
                self._expected = []
        return self._expected

    def identify(self, parts: list[Routed]) -> list[ToProfiles | VisitorEffects]:
        """Identity shard ``parts[0].shard`` on the routed parts it was given (one per input batch)."""
        own = parts[0].shard
        events = parts[0].events if len(parts) == 1 else [e for part in parts for e in part.events]
        clocks = merge_clocks([part.clocks for part in parts])
        routed, effects = self.identity(own).process(events, own)
        routed.setdefault(own, [])
        here, keys = process_tag(), self.shard_keys
        out: list[ToProfiles | VisitorEffects] = [
            ToProfiles(keys[s], evs, clocks if s == own else None, here) for s, evs in routed.items()
        ]
        if effects:
            out.append(VisitorEffects(effects))
        return out

    def apply(self, number: int, parts: list[ToProfiles]) -> list[Effect]:
        """Profile shard ``number`` on the parts identity shards sent it."""
        events = parts[0].events if len(parts) == 1 else [e for part in parts for e in part.events]
        return self.profiles(number).process(events, merge_clocks([part.clocks for part in parts]))

    def run(self, routed: list[tuple[str, Any]]) -> list[Effect]:
        """A whole routed batch through every stage in this thread, in the dataflow's order: every identity shard,
        then each profile shard on what it was sent. Dead letters come first, as the router emits them."""
        effects: list[Effect] = []
        to_profiles: dict[str, list[ToProfiles]] = {}
        for key, value in routed:
            if key == DEAD:
                effects.extend(value)
                continue
            for item in self.identify([value]):
                if isinstance(item, VisitorEffects):
                    effects.extend(item.effects)
                else:
                    to_profiles.setdefault(item.shard_key, []).append(item)
        for key, parts in to_profiles.items():
            effects.extend(self.apply(shard_number(key), parts))
        return effects
