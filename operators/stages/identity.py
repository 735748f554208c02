"""Identity stitching: anonymous visitors become customers, with their history.

Events are sharded by customer id, but a visitor's events before login carry
only an ``anonymous_id`` and so land on another shard. This stage, sharded by
anonymous id, sits before the profiles:

- an event with a ``customer_id`` passes straight through to that customer's shard;
- an anonymous event of a visitor already linked gets the customer's id and follows;
- an anonymous event of an unknown visitor is buffered here (bounded);
- an ``identify`` links the two ids and carries the buffered events along, so
  the profile stage replays them into the customer's profile: the visitor's
  interests, cart and active hours become the customer's, not just the id.

The buffer stays in the store after release, and the profile remembers which
anonymous ids it has merged, so an ``identify`` replayed after a crash merges
nothing twice. A restart also reads the buffered events again, and may read them
after the visitor is linked: linked in the store before the crash, or by an
``identify`` this run read first (partitions are read at their own pace), which
released a buffer the run before had stored. Those found among the released
events are dropped here, since they reach the profile only with the release
(already merged, or merged when the ``identify`` is read again). Forwarded, they
would be applied twice once the customer's event-id window had moved on:
released events carry no source offset for the profile to skip them by. So
memory keeps the released events of a visitor whose events came back from the
store (only those can be read again), and a second ``identify`` of the same link
never rewrites the stored record without them.

An ``erasure_request`` reaches every identity shard (operators/events/router.py): each
drops the visitors it holds that are linked to the customer, and the copy on
the customer's own shard goes on to the profile shard, which deletes what the
store holds. One with only an ``anonymous_id`` forgets that visitor here.
"""

from __future__ import annotations

import logging
from typing import Any

from crm_stream.operators.events import deadletters
from crm_stream.operators.io.interface import AUDIT, DEADLETTER, DEL, PUT, Effect, Store
from crm_stream.operators.io.keys import KeySpace, shard_of
from crm_stream.operators.profile.state import SOURCE, SOURCE_OFFSET

log = logging.getLogger(__name__)
RELEASED = "_released"  # identify events carry the visitor's buffered events under this key
ERASE_LINKS_ONLY = "_erase_links_only"  # an erasure's copy for the other identity shards: forget links, route nothing


def _released(event: dict[str, Any], customer_id: str) -> dict[str, Any]:
    out = {k: v for k, v in event.items() if k not in (SOURCE, SOURCE_OFFSET)}
    out["customer_id"] = customer_id
    return out


def _released_before(visitor: dict[str, Any], event: dict[str, Any]) -> bool:
    """Was ``event`` among the events the linked ``visitor``'s identify released (a redelivery of a buffered one)?
    Only a visitor whose events came back from the store holds them (``IdentityShard._identify``), and at most
    ``anonymous_max_events``."""
    event_id = event["event_id"]
    return any(e["event_id"] == event_id for e in visitor["events"])


class IdentityShard:
    def __init__(self, store: Store, keys: KeySpace, shards: int, max_events: int, dead_letter_bytes: int = 1_000_000) -> None:
        """``dead_letter_bytes``: the dead-letter topic's message limit (kafka.max_message_bytes)."""
        self.store = store
        self.keys = keys
        self.shards = shards
        self.max_events = max_events
        self.dead_letter_bytes = dead_letter_bytes
        self.visitors: dict[str, dict[str, Any]] = {}
        # Visitors whose record came back from the store holding events: a restart may read those events again.
        self.restored: set[str] = set()

    def process(
        self, events: list[dict[str, Any]], own: int | None = None
    ) -> tuple[dict[int, list[dict[str, Any]]], list[Effect]]:
        """Route a batch to profile shards; returns (events per shard, store effects).

        ``own``, this identity shard's number, when known: a customer's own event was routed here by its
        customer id, so its profile shard is this number (no second hash).
        """
        self._hydrate(events)
        routed: dict[int, list[dict[str, Any]]] = {}
        dirty: set[str] = set()
        linked: dict[str, dict[str, Any]] = {}
        erased: set[str] = set()
        notes: list[Effect] = []
        shards = self.shards
        for event in events:
            customer_id = event.get("customer_id")
            kind = event["type"]
            if customer_id is not None and kind != "identify" and kind != "erasure_request":  # most events: straight on
                target = own if own is not None else shard_of(customer_id, shards)
                bucket = routed.get(target)
                if bucket is None:
                    bucket = routed[target] = []
                bucket.append(event)
                continue
            try:
                self._visit(event, routed, dirty, linked, erased, notes)
            except Exception as exc:  # a bug must cost one record, never the engine: the record is kept as a dead letter
                log.exception("identity could not process event %s", event.get("event_id"))
                notes.append(Effect(DEADLETTER, None, deadletters.failure(event, "identity", exc, self.dead_letter_bytes)))
        records = {a: self.visitors[a] for a in dirty}
        records.update(linked)
        effects: list[Effect] = []
        for anonymous_id, record in sorted(records.items()):
            effects.append(Effect(PUT, self.keys.anon(anonymous_id), self._encode(record, effects)))
        effects.extend(Effect(DEL, self.keys.anon(a), None) for a in sorted(erased - records.keys()))
        effects.extend(notes)
        return routed, effects

    def _encode(self, record: dict[str, Any], effects: list[Effect]) -> Any:
        """A visitor's record as the store keeps it. Should a buffered event make that fail (the decoder's bounds
        are meant to rule it out), that event leaves the buffer as a dead letter: never the whole engine, and never
        again on each restart."""
        try:
            return self.store.encode(record)
        except Exception:
            kept = []
            for event in record["events"]:
                try:
                    self.store.encode(event)
                    kept.append(event)
                except Exception as exc:
                    log.exception("identity could not store buffered event %s", event.get("event_id"))
                    effects.append(
                        Effect(
                            DEADLETTER, None, deadletters.failure(event, "identity (visitor buffer)", exc, self.dead_letter_bytes)
                        )
                    )
            record["events"][:] = kept
            return self.store.encode(record)

    def _visit(
        self,
        event: dict[str, Any],
        routed: dict[int, list[dict[str, Any]]],
        dirty: set[str],
        linked: dict[str, dict[str, Any]],
        erased: set[str],
        notes: list[Effect],
    ) -> None:
        """One event that is not a customer's own: an erasure, an identify, or a visitor's."""
        customer_id = event.get("customer_id")
        kind = event["type"]
        if kind == "erasure_request":
            forgotten = self._erase(event)
            erased.update(forgotten)
            dirty.difference_update(forgotten)
            for anonymous_id in forgotten:
                linked.pop(anonymous_id, None)
            if customer_id is None:  # a visitor only: nothing downstream knows them
                notes.append(Effect(AUDIT, None, {"event_id": event["event_id"], "anonymous_id": event["anonymous_id"]}))
            if event.get(ERASE_LINKS_ONLY) or customer_id is None:
                return
        elif kind == "identify":
            customer_id = self._identify(event, linked)
            dirty.discard(event["anonymous_id"])
            event[SOURCE] = f"{event[SOURCE]}|{event['anonymous_id']}"  # travels the visitor's path (see below)
        elif customer_id is None:
            visitor = self._visitor(event["anonymous_id"])
            customer_id = visitor["customer_id"]
            if customer_id is None:
                self._buffer(visitor, event)
                dirty.add(event["anonymous_id"])
                return
            if visitor["events"] and _released_before(visitor, event):
                return  # read again after a restart: it reaches the profile with the release (module doc)
            event["customer_id"] = customer_id
            # This path (via the visitor's shard) is ordered apart from the customer's own events.
            event[SOURCE] = f"{event[SOURCE]}|{event['anonymous_id']}"
        routed.setdefault(shard_of(customer_id, self.shards), []).append(event)

    def _erase(self, event: dict[str, Any]) -> set[str]:
        """Forget the visitors linked to the erased customer that this shard holds, and the event's own visitor.

        They stay known as blank visitors, so that a read-back from the store cannot race the delete.
        Returns their anonymous ids (the store keys to delete). A scan of this shard's visitors: erasures
        are rare, and a reverse index would cost memory on every link.
        """
        customer_id = event.get("customer_id")
        forgotten = {a for a, v in self.visitors.items() if customer_id is not None and v["customer_id"] == customer_id}
        anonymous_id = event.get("anonymous_id")
        if anonymous_id and (anonymous_id in self.visitors or not event.get(ERASE_LINKS_ONLY)):
            forgotten.add(anonymous_id)
        for a in forgotten:
            if a in self.visitors:
                self.visitors[a] = {"customer_id": None, "events": []}
        self.restored.difference_update(forgotten)
        return forgotten

    def _hydrate(self, events: list[dict[str, Any]]) -> None:
        missing = sorted(
            {
                e["anonymous_id"]
                for e in events
                if (e.get("customer_id") is None or e["type"] == "identify") and e["anonymous_id"] not in self.visitors
            }
        )
        if not missing:
            return
        for anonymous_id, blob in zip(missing, self.store.get_many([self.keys.anon(a) for a in missing])):
            visitor = self.store.decode(blob) if blob else {"customer_id": None, "events": []}
            self.visitors[anonymous_id] = visitor
            if visitor["events"]:
                self.restored.add(anonymous_id)

    def _visitor(self, anonymous_id: str) -> dict[str, Any]:
        return self.visitors.setdefault(anonymous_id, {"customer_id": None, "events": []})

    def _buffer(self, visitor: dict[str, Any], event: dict[str, Any]) -> None:
        buffered = visitor["events"]
        if any(e["event_id"] == event["event_id"] for e in buffered):
            return  # a redelivery while still anonymous
        buffered.append(event)
        if len(buffered) > self.max_events:
            del buffered[0]

    def _identify(self, event: dict[str, Any], linked: dict[str, dict[str, Any]]) -> str:
        customer_id: str = event["customer_id"]
        anonymous_id: str = event["anonymous_id"]
        visitor = self._visitor(anonymous_id)
        # Released events are guarded by the profile's merged_anonymous_ids, not by source offsets.
        event[RELEASED] = [_released(e, customer_id) for e in visitor["events"]]
        if visitor["customer_id"] == customer_id:
            # The same link again (a redelivered identify, or one read again after a restart): the stored record
            # already holds the released events. Rewritten from memory, which keeps none of a visitor this run
            # linked itself, it would lose them, and a later restart would forward them a second time.
            return customer_id
        # The store keeps the released events (crash safety, see the module doc). Memory keeps only the link, and
        # the events as well when they came back from the store: the run before read them, and this run may read
        # them again after this identify (module doc). Events this run read itself are never read again.
        linked[anonymous_id] = {"customer_id": customer_id, "events": visitor["events"]}
        kept = visitor["events"] if anonymous_id in self.restored else []
        self.restored.discard(anonymous_id)
        self.visitors[anonymous_id] = {"customer_id": customer_id, "events": kept}
        return customer_id
