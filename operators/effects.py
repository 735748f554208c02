"""Applying a batch of effects in the one order that keeps restarts honest.

Effects are ``(target, key, value)`` tuples: ``put``/``del`` for the store,
``service``/``marketing``/``deadletter`` (and display-only ``changes``) for
outputs. Outputs are made durable first, then state is written in one atomic
store write. So whatever state the store holds, the alerts it implies have
been delivered; a crash between the two only means the state is older, its
events are replayed, and their alerts re-sent with the same ids.
"""

from __future__ import annotations

from typing import Iterable

from operators.io import Outputs, Store

Effect = tuple[str, str | None, bytes | None]


class EffectsWriter:
    def __init__(self, outputs: Outputs, store: Store) -> None:
        self.outputs = outputs
        self.store = store

    def write(self, effects: Iterable[Effect]) -> None:
        puts: dict[str, bytes] = {}
        deletes: dict[str, None] = {}
        sent = 0
        for target, key, value in effects:
            if target == "put":
                puts[key] = value  # type: ignore[index,assignment]
                deletes.pop(key, None)  # type: ignore[arg-type]
            elif target == "del":
                deletes[key] = None  # type: ignore[index]
                puts.pop(key, None)  # type: ignore[arg-type]
            else:
                self.outputs.send(target, key, value)  # type: ignore[arg-type]
                sent += 1
        if sent:
            self.outputs.flush()
        if puts or deletes:
            self.store.write(puts, deletes)

    def close(self) -> None:
        self.outputs.flush()
        self.outputs.close()
