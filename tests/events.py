"""Small builders of contract events for tests."""

from __future__ import annotations

import itertools
from typing import Any

from crm_stream.operators.io import jsonutil

_ids = itertools.count(1)
DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def event(type_: str, customer_id: str | None = "c1", *, day: float = 0.0, **fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"event_id": f"ev-{next(_ids)}", "type": type_, "ts": T0 + int(day * DAY_MS)}
    if customer_id is not None:
        ev["customer_id"] = customer_id
    ev.update(fields)
    return ev


def view(customer_id: str = "c1", category: str = "coffee", **kw: Any) -> dict[str, Any]:
    return event("product_view", customer_id, product_id=kw.pop("product_id", "p1"), category=category, **kw)


def purchase(customer_id: str = "c1", amount: float = 20.0, currency: str = "USD", **kw: Any) -> dict[str, Any]:
    return event("purchase", customer_id, order_id=kw.pop("order_id", f"o-{next(_ids)}"), amount=amount, currency=currency, **kw)


def lines(events: list[dict[str, Any]]) -> bytes:
    return b"".join(jsonutil.dumps_line(e) for e in events)
