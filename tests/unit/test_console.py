"""The agents' console: its pure parts (auth, claims, alert ring, feedback, embedded plumbing) and its JSON API."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from starlette.testclient import TestClient

from crm_stream.config.settings import ConsoleSettings, EngineSettings, Settings, load
from crm_stream.flows.console.app import ConsoleBackend, build_app
from crm_stream.flows.console.auth import Agents, SessionSigner, hash_password, verify_password
from crm_stream.flows.console.claims import MemoryClaims
from crm_stream.flows.console.feed import AlertRing, ControlInbox, FeedbackUnavailable, InboxReader, TeeOutputs, feedback_event
from crm_stream.operators.events.schema import Decoder, Origin
from crm_stream.operators.events.timeutil import parse_ts
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.files import CollectingOutputs
from crm_stream.operators.io.interface import MARKETING, SERVICE, Raw
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import MemoryStore
from crm_stream.operators.privacy.audit import AuditLog
from crm_stream.operators.profile.state import ProfileRules, apply, new_profile
from tests.events import T0, event, purchase, view

PASSWORD = "correct horse battery"
SALT = b"fixed-salt-16byt"


def alert(n: int, customer_id: str = "c1", kind: str = "angry_customer", priority: str = "high") -> dict[str, Any]:
    return {
        "alert_id": f"{kind}-{n}",
        "kind": kind,
        "customer_id": customer_id,
        "ts": f"2026-01-0{1 + n % 9}T10:00:00.000Z",
        "priority": priority,
        "score": 0.9,
        "reasons": [f"reason {n}"],
        "payload": {},
    }


# ----------------------------------------------------------------------------- auth


def test_password_hash_round_trip_and_salt() -> None:
    hashed = hash_password(PASSWORD)
    assert hashed.startswith("scrypt$") and PASSWORD not in hashed
    assert verify_password(PASSWORD, hashed) and not verify_password(PASSWORD + "!", hashed)
    assert hash_password(PASSWORD) != hashed  # a fresh salt each time
    assert not verify_password(PASSWORD, "not-a-hash") and not verify_password(PASSWORD, "md5$x$y$z$a$b")


def test_agents_reject_unknown_names_and_wrong_passwords() -> None:
    agents = Agents({"alice": hash_password(PASSWORD, salt=SALT)})
    assert agents.authenticate("alice", PASSWORD)
    assert not agents.authenticate("alice", "nope") and not agents.authenticate("mallory", PASSWORD)


def test_session_tokens_expire_and_cannot_be_forged() -> None:
    now = [1000.0]
    signer = SessionSigner(b"s" * 32, ttl_s=60, clock=lambda: now[0])
    token = signer.issue("alice")
    assert signer.verify(token) == "alice"
    agent, expires, sig = token.split(".")
    assert signer.verify(f"bob.{expires}.{sig}") is None  # renamed
    assert signer.verify(f"alice.{int(expires) + 999}.{sig}") is None  # extended
    assert SessionSigner(b"t" * 32, ttl_s=60, clock=lambda: now[0]).verify(token) is None  # another secret
    now[0] += 61
    assert signer.verify(token) is None
    with pytest.raises(ValueError):
        signer.issue("bad name.with space")
    with pytest.raises(ValueError, match="at least 16"):
        SessionSigner(b"short", ttl_s=1)


def test_console_settings_validate_and_mask_hashes() -> None:
    hashed = hash_password(PASSWORD, salt=SALT)
    settings = load(env={"CRM_STREAM__CONSOLE__PASSWORD_HASHES__ALICE": hashed, "CRM_STREAM__CONSOLE__PORT": "9000"})
    assert settings.console.password_hashes == {"alice": hashed} and settings.console.port == 9000
    assert settings.masked()["console"]["password_hashes"] == {"alice": "***"}
    from crm_stream.config.settings import ConfigError

    with pytest.raises(ConfigError, match="console-password alice"):
        load(env={"CRM_STREAM__CONSOLE__PASSWORD_HASHES__ALICE": "plaintext"})


# ----------------------------------------------------------------------------- claims


def test_memory_claims_first_agent_wins_until_release_or_expiry() -> None:
    now = [100.0]
    heard: list[dict[str, Any]] = []
    claims = MemoryClaims(ttl_s=60, clock=lambda: now[0])
    claims.listen(heard.append)
    assert claims.claim("c1", "alice")[0]
    taken, held = claims.claim("c1", "bob")
    assert not taken and held["agent"] == "alice"
    assert claims.claim("c1", "alice")[0]  # extends her own
    assert not claims.release("c1", "bob")
    assert claims.holders(["c1", "c2"]) == {"c1": {"customer_id": "c1", "agent": "alice", "expires_at": 160_000}}
    now[0] += 61
    assert claims.holders(["c1"]) == {}
    assert claims.claim("c1", "bob")[0]
    assert claims.release("c1", "bob") and claims.holders(["c1"]) == {}
    assert [h["agent"] for h in heard] == ["alice", "alice", "bob", None]


# ----------------------------------------------------------------------------- alert ring and feedback


def test_ring_dedupes_pages_newest_first_and_filters() -> None:
    ring = AlertRing(capacity=5)
    heard: list[int] = []
    stop = ring.listen(lambda e: heard.append(e["seq"]))
    for n in range(7):
        ring.add(alert(n, customer_id=f"c{n % 2}", priority="urgent" if n % 3 == 0 else "high"))
    assert ring.add(alert(6)) is None and ring.add({"kind": "no id"}) is None
    page, before = ring.page(limit=2)
    assert [e["alert_id"] for e in page] == ["angry_customer-6", "angry_customer-5"] and before == 6
    rest, end = ring.page(before=before, limit=10)
    assert [e["seq"] for e in rest] == [5, 4, 3] and end is None  # capacity 5: the two oldest are gone
    assert [e["seq"] for e in ring.page(priority="urgent")[0]] == [7, 4]
    assert [e["seq"] for e in ring.page(customer_id="c1")[0]] == [6, 4]
    assert ring.get("angry_customer-0") is None and ring.get("angry_customer-3")["seq"] == 4
    assert heard == [1, 2, 3, 4, 5, 6, 7]
    stop()
    ring.add(alert(9))
    assert heard[-1] == 7
    assert ring.newest_ts == parse_ts("2026-01-07T10:00:00Z")  # alert(6)'s, the newest event time seen


def test_ring_keeps_each_destination_apart() -> None:
    ring = AlertRing(capacity=2)
    for n in range(5):  # a flood of marketing triggers...
        ring.add(alert(n, kind="win_back"), MARKETING)
    ring.add(alert(9), SERVICE)  # ...never pushes a service alert out
    assert [e["alert_id"] for e in ring.page(destination=SERVICE)[0]] == ["angry_customer-9"]
    assert [e["alert_id"] for e in ring.page(destination=MARKETING)[0]] == ["win_back-4", "win_back-3"]
    assert [e["seq"] for e in ring.page()[0]] == [6, 5, 4]  # all destinations, newest first
    assert ring.page(limit=1)[1] == 6 and [e["seq"] for e in ring.page(before=6)[0]] == [5, 4]
    assert ring.get("win_back-0") is None and ring.get("win_back-4")["destination"] == MARKETING
    assert ring.kinds(SERVICE) == ["angry_customer"] and ring.kinds() == ["angry_customer", "win_back"]
    assert ring.add(alert(4, kind="win_back"), SERVICE) is None  # one alert id is kept once, wherever it went
    assert ring.forget("c1") == 3 and ring.page()[0] == []
    with pytest.raises(ValueError, match="destination"):
        ring.add(alert(1), "deadletter")


def test_feedback_event_is_a_valid_contract_event() -> None:
    ev = feedback_event(alert(1, "c42"), "incorrect", "alice", T0)
    assert ev["type"] == "alert_feedback" and ev["customer_id"] == "c42" and ev["agent_id"] == "alice"
    assert ev == feedback_event(alert(1, "c42"), "incorrect", "alice", T0)  # deterministic
    assert ev["event_id"] != feedback_event(alert(1, "c42"), "incorrect", "alice", T0 + 1)["event_id"]
    decoded = Decoder({"USD": 1.0}, "USD", 1_000_000).decode(jsonutil.dumps(ev), Origin("crm.control", 0, 0))
    assert isinstance(decoded, dict) and decoded["alert_id"] == "angry_customer-1" and decoded["ts"] == T0
    with pytest.raises(ValueError):
        feedback_event(alert(1), "maybe", "alice", T0)


def test_tee_outputs_show_service_alerts_and_marketing_triggers_once_flushed() -> None:
    inner, ring = CollectingOutputs(), AlertRing()
    tee = TeeOutputs(inner, ring)
    tee.send(SERVICE, "c1", jsonutil.dumps(alert(1)))
    tee.send(MARKETING, "c1", jsonutil.dumps(alert(2, kind="win_back")))
    tee.send("deadletter", None, b'{"reason": "not JSON"}')
    assert ring.page()[0] == []
    tee.flush()
    assert [(e["alert_id"], e["destination"]) for e in ring.page()[0]] == [
        ("win_back-2", MARKETING),
        ("angry_customer-1", SERVICE),
    ]
    assert len(inner.records[SERVICE]) == 1 and len(inner.records[MARKETING]) == 1
    heard: list[str] = []
    ring.on_forget(heard.append)
    tee.send(SERVICE, "c1", None)  # an erasure puts a tombstone on both alert topics
    tee.send(MARKETING, "c1", None)
    tee.flush()
    assert heard == ["c1"] and ring.page()[0] == []  # open pages are told once


def test_an_erasure_tombstone_takes_the_customers_alerts_off_the_console() -> None:
    inner, ring = CollectingOutputs(), AlertRing()
    tee = TeeOutputs(inner, ring)
    tee.send(SERVICE, "c1", jsonutil.dumps(alert(1)))
    tee.send(SERVICE, "c2", jsonutil.dumps({**alert(2), "customer_id": "c2"}))
    tee.flush()
    tee.send(SERVICE, "c1", None)  # the engine erased c1
    tee.flush()
    assert [e["customer_id"] for e in ring.page()[0]] == ["c2"]
    assert ring.get("angry_customer-1") is None  # so no agent can label it (feedback would recreate the customer)
    heard: list[str] = []
    ring.on_forget(heard.append)
    tee.send(SERVICE, "c2", None)
    tee.flush()
    assert heard == ["c2"] and ring.page()[0] == []  # open pages are told to drop them too


class _ListReader:
    def __init__(self, batches: list[list[Raw]]) -> None:
        self.batches = batches

    def partitions(self) -> list[str]:
        return ["only"]

    def open(self, partition: str, position: Any) -> Any:
        batches = list(self.batches)

        class Part:
            def read_batch(self) -> list[Raw]:
                return batches.pop(0) if batches else []

            def position(self) -> int:
                return 0

            def done(self) -> bool:
                return not batches

            def close(self) -> None:
                pass

        return Part()


def test_inbox_reader_feeds_console_events_and_ends_with_its_input() -> None:
    inbox = ControlInbox()
    reader = InboxReader(_ListReader([[Raw("clickstream", 0, 0, b"{}")]]), inbox)
    assert reader.partitions() == ["only", "console"]
    inner, console = reader.open("only", None), reader.open("console", None)
    inbox.send({"type": "alert_feedback"})
    assert [(r.topic, r.partition, r.offset) for r in console.read_batch()] == [("control", 1, 0)]
    assert console.position() == 1 and not console.done()
    inner.read_batch()
    assert inner.done() and console.done()
    with pytest.raises(FeedbackUnavailable, match="run --console"):
        inbox.send({"type": "alert_feedback"})


# ----------------------------------------------------------------------------- what an angry customer's alert carries


def test_an_angry_alert_carries_the_message_channel_and_the_tickets_scores() -> None:
    from crm_stream.flows.console.profiles import open_tickets
    from tests.unit.test_rules import Harness

    h = Harness()
    h.feed(event("ticket_opened", "c1", ticket_id="t1", day=1.0))
    said = [
        "Hi, could you tell me when my order ships? Thanks",
        "This is the THIRD time I'm asking, unacceptable!!! Call me on +44 20 7946 0958",
        "still nothing!!! unacceptable",  # within the cooldown: no second alert, but its score is kept
    ]
    for n, text in enumerate(said):
        h.feed(event("support_message", "c1", ticket_id="t1", direction="inbound", channel="chat", day=1.1 + n / 10, text=text))
    h.feed(event("support_message", "c1", ticket_id="t1", direction="outbound", day=1.45, text="Sorry! Looking now"))
    [alert] = h.alerts("angry_customer", SERVICE)
    payload = alert["payload"]
    assert payload["channel"] == "chat" and payload["ticket_id"] == "t1" and payload["ticket_messages"] == 2
    assert payload["excerpt"].startswith("This is the THIRD time") and "[phone]" in payload["excerpt"]  # redacted
    assert payload["ticket_opened_at"] == "2026-01-02T00:00:00.000Z"
    first, second = payload["ticket_scores"]
    threshold = h.shard.settings.rules.angry_threshold
    assert first["ts"] < second["ts"] == alert["ts"] and first["score"] < threshold <= second["score"] == round(alert["score"], 4)
    [ticket] = open_tickets(h.shard.profiles["c1"]["tickets"])  # the profile has the third (and only inbound ones)
    assert ticket["messages"] == 3 and ticket["scores"][:2] == payload["ticket_scores"] and len(ticket["scores"]) == 3
    for n in range(12):  # bounded: the newest few only
        h.feed(event("support_message", "c1", ticket_id="t1", direction="inbound", day=2 + n / 10, text="any news?"))
    kept = h.shard.profiles["c1"]["tickets"]["t1"]["scores"]
    assert len(kept) == 8 and kept == sorted(kept) and kept[-1][0] == h.shard.profiles["c1"]["last_seen"]


# ----------------------------------------------------------------------------- the JSON API


class _Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def _profile_store(settings: Settings, customer_id: str) -> MemoryStore:
    decoder, rules = Decoder({"USD": 1.0}, "USD", 1_000_000), ProfileRules.from_settings(EngineSettings())
    events = [
        view(customer_id, day=0),
        purchase(customer_id, 120.0, day=1),
        event("ticket_opened", customer_id, ticket_id="t9", day=2),
    ]
    profile = new_profile(customer_id, events[0]["ts"])
    for n, ev in enumerate(events):
        apply(profile, decoder.decode(jsonutil.dumps(ev), Origin("t", 0, n)), rules)  # type: ignore[arg-type]
    store = MemoryStore()
    store.write({KeySpace(settings.store.key_prefix).profile(customer_id): profile})
    return store


@pytest.fixture
def console(tmp_path: Any) -> Any:
    cfg = ConsoleSettings(
        password_hashes={"alice": hash_password(PASSWORD, salt=SALT), "bob": hash_password(PASSWORD, salt=SALT)}
    )
    settings = dataclasses.replace(Settings(), console=cfg).replace(
        audit=dataclasses.replace(Settings().audit, kind="file", path=str(tmp_path / "audit.jsonl"))
    )
    ring, sink = AlertRing(), _Sink()
    backend = ConsoleBackend(
        settings, ring, MemoryClaims(600), _profile_store(settings, "c1"), sink, AuditLog(settings), lambda: T0
    )
    client = TestClient(build_app(backend))
    ring.add(alert(1, "c1", priority="urgent"))
    ring.add(alert(2, "c2", kind="return_spike", priority="high"))
    return client, sink, tmp_path / "audit.jsonl"


def _sign_in(client: TestClient, agent: str = "alice") -> str:
    response = client.post("/session", json={"agent": agent, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()["token"]


def _audit(path: Any) -> list[dict[str, Any]]:
    return [jsonutil.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_nothing_personal_without_signing_in(console: Any) -> None:
    client, sink, audit_path = console
    assert client.get("/").status_code == 200  # the page itself holds no data
    for method, path in [
        ("GET", "/customers/c1"),
        ("GET", "/alerts"),
        ("GET", "/alerts/stream"),
        ("GET", "/me"),
        ("POST", "/alerts/angry_customer-1/feedback"),
        ("POST", "/customers/c1/claim"),
    ]:
        response = client.request(method, path, json={"label": "correct"})
        assert response.status_code == 401, path
        assert set(response.json()) == {"error"} and "c1" not in response.text
    assert client.get("/customers/c1", headers={"Authorization": "Bearer alice.99999999999.forged"}).status_code == 401
    assert client.post("/session", json={"agent": "alice", "password": "wrong"}).status_code == 401
    assert sink.events == []
    assert [(r["action"], r["actor"]) for r in _audit(audit_path)] == [("sign_in_failed", "agent:alice")]


def test_sign_in_sets_an_http_only_cookie_and_bearer_tokens_work(console: Any) -> None:
    client, _, audit_path = console
    response = client.post("/session", json={"agent": "alice", "password": PASSWORD})
    assert "httponly" in response.headers["set-cookie"].lower() and "samesite=strict" in response.headers["set-cookie"].lower()
    assert client.get("/me").json() == {"agent": "alice"}
    token = response.json()["token"]
    client.cookies.clear()
    assert client.get("/me", headers={"Authorization": f"Bearer {token}"}).json() == {"agent": "alice"}
    assert client.post("/session", data={"agent": "alice", "password": PASSWORD}).status_code == 400  # JSON only
    assert _audit(audit_path)[0]["action"] == "sign_in"


def test_alerts_page_and_filter(console: Any) -> None:
    client, _, _ = console
    _sign_in(client)
    body = client.get("/alerts", params={"limit": 1}).json()
    assert [a["alert_id"] for a in body["alerts"]] == ["return_spike-2"] and body["next_before"] == 2
    older = client.get("/alerts", params={"before": body["next_before"]}).json()
    assert [a["alert_id"] for a in older["alerts"]] == ["angry_customer-1"] and older["next_before"] is None
    assert [a["priority"] for a in client.get("/alerts", params={"priority": "urgent"}).json()["alerts"]] == ["urgent"]
    assert client.get("/alerts", params={"limit": "x"}).status_code == 400
    assert body["kinds"] == ["angry_customer", "return_spike"]
    assert body["currency"] == "USD" and body["destinations"] == ["service"] and body["destination"] == "service"
    assert client.get("/alerts", params={"destination": "deadletter"}).status_code == 400


def test_marketing_triggers_are_apart_and_take_no_feedback(console: Any) -> None:
    client, sink, _ = console
    _sign_in(client)
    ring = client.app.state.backend.ring
    ring.add({**alert(3, "c1", kind="win_back", priority="low"), "send_at": "2026-01-05T09:00:00.000Z"}, MARKETING)
    assert [a["alert_id"] for a in client.get("/alerts").json()["alerts"]] == ["return_spike-2", "angry_customer-1"]
    triggers = client.get("/alerts", params={"destination": "marketing"}).json()
    assert [a["alert_id"] for a in triggers["alerts"]] == ["win_back-3"] and triggers["kinds"] == ["win_back"]
    assert [a["alert_id"] for a in client.get("/customers/c1").json()["alerts"]] == ["win_back-3", "angry_customer-1"]
    response = client.post("/alerts/win_back-3/feedback", json={"label": "incorrect"})
    assert response.status_code == 400 and "service alerts" in response.json()["error"] and sink.events == []


def test_amounts_come_in_the_configured_base_currency(tmp_path: Any) -> None:
    import re

    from crm_stream.flows.console.app import PAGE

    console = dataclasses.replace(ConsoleSettings(), password_hashes={"alice": hash_password(PASSWORD, salt=SALT)})
    settings = dataclasses.replace(Settings(), engine=dataclasses.replace(EngineSettings(), base_currency="EUR"), console=console)
    backend = ConsoleBackend(settings, AlertRing(), MemoryClaims(600), MemoryStore(), _Sink(), AuditLog(settings), lambda: T0)
    client = TestClient(build_app(backend))
    _sign_in(client)
    assert client.get("/alerts").json()["currency"] == "EUR"
    page = PAGE.read_text()
    assert "state.currency = data.currency" in page  # the page formats with what the API says...
    assert not re.search(r"currency: *['\"][A-Z]{3}['\"]", page)  # ...and hard-codes no currency


def test_profile_read_is_audited(console: Any) -> None:
    client, _, audit_path = console
    _sign_in(client)
    body = client.get("/customers/c1").json()
    profile = body["profile"]
    assert profile["customer_id"] == "c1" and profile["frequency"] == 1 and profile["monetary"] == 120.0
    assert profile["open_tickets"] == ["t9"] and "churn_risk" in profile and "next_purchase_in_days" in profile
    assert profile["events_by_type"] == {"product_view": 1, "purchase": 1, "ticket_opened": 1}
    [ticket] = profile["tickets"]
    assert ticket["ticket_id"] == "t9" and ticket["messages"] == 0 and ticket["scores"] == [] and not ticket["reopened"]
    assert [a["alert_id"] for a in body["alerts"]] == ["angry_customer-1"]
    reads = [r for r in _audit(audit_path) if r["action"] == "profile_read"]
    assert reads == [
        {"at": reads[0]["at"], "actor": "agent:alice", "action": "profile_read", "customer_id": "c1", "via": "console"}
    ]
    assert client.get("/customers/nobody").status_code == 404
    assert len([r for r in _audit(audit_path) if r["action"] == "profile_read"]) == 1  # nothing shown, nothing read


def test_feedback_sends_the_contract_event_and_is_audited(console: Any) -> None:
    client, sink, audit_path = console
    _sign_in(client)
    response = client.post("/alerts/angry_customer-1/feedback", json={"label": "incorrect"})
    assert response.status_code == 200, response.text
    assert sink.events == [response.json()["event"]]
    ev = sink.events[0]
    assert {k: ev[k] for k in ("type", "alert_id", "label", "agent_id", "customer_id")} == {
        "type": "alert_feedback",
        "alert_id": "angry_customer-1",
        "label": "incorrect",
        "agent_id": "alice",
        "customer_id": "c1",
    }
    assert client.post("/alerts/angry_customer-1/feedback", json={"label": "meh"}).status_code == 400
    assert client.post("/alerts/unknown/feedback", json={"label": "correct"}).status_code == 404
    assert [r["detail"] for r in _audit(audit_path) if r["action"] == "alert_feedback"] == [
        {"alert_id": "angry_customer-1", "label": "incorrect"}
    ]


def test_claims_keep_two_agents_off_one_customer(console: Any) -> None:
    client, _, audit_path = console
    alice = _sign_in(client, "alice")
    bob = _sign_in(client, "bob")
    as_alice, as_bob = {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"}
    client.cookies.clear()
    assert client.post("/customers/c1/claim", headers=as_alice).json()["claim"]["agent"] == "alice"
    taken = client.post("/customers/c1/claim", headers=as_bob)
    assert taken.status_code == 409 and taken.json()["claim"]["agent"] == "alice"
    assert client.get("/alerts", headers=as_bob).json()["claims"]["c1"]["agent"] == "alice"
    assert client.delete("/customers/c1/claim", headers=as_bob).json() == {"released": False}
    assert client.delete("/customers/c1/claim", headers=as_alice).json() == {"released": True}
    assert client.post("/customers/c1/claim", headers=as_bob).status_code == 200
    ops = [(r["actor"], r["detail"]["op"]) for r in _audit(audit_path) if r["action"] == "alert_claim"]
    assert ops == [("agent:alice", "claim"), ("agent:bob", "claim"), ("agent:alice", "release"), ("agent:bob", "claim")]


# ----------------------------------------------------------------------------- beside the embedded engine


def test_run_console_shows_the_demo_and_feeds_feedback_into_the_dataflow(tmp_path: Any) -> None:
    import httpx2

    from crm_stream.flows.console.backends import EmbeddedConsole
    from crm_stream.flows.runtime import RunOptions, run

    settings = load(
        env={
            "CRM_STREAM__SIMULATOR__CUSTOMERS": "40",
            "CRM_STREAM__SIMULATOR__DAYS": "40",
            "CRM_STREAM__SIMULATOR__RATE": "0",
            # The feedback below gives the console partition an event-time clock of its own, stuck near the start;
            # the whole run is over long before the 5 s of silence after which it stops holding the others' timers
            # back, so what fires here fires when the input ends (operators/stages/shard.py ProfileShard.finish).
            "CRM_STREAM__SINK__KIND": "null",
            "CRM_STREAM__AUDIT__PATH": str(tmp_path / "audit.jsonl"),
        }
    )
    console = EmbeddedConsole(settings, "127.0.0.1", 0)
    assert console.demo_password  # no agents configured: a one-run demo agent
    console.start()
    try:
        # Queued before the run starts, so it enters through the console partition like a click would.
        console.inbox.send(feedback_event(alert(1, "c0000001"), "correct", "demo", parse_ts(settings.simulator.start) + 1))
        kwargs = console.run_kwargs()
        raised: set[tuple[str, str]] = set()  # (destination, kind) of everything the engine sent

        class Watched:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def send(self, destination: str, key: str | None, value: bytes | None) -> None:
                if destination in (SERVICE, MARKETING) and value is not None:
                    raised.add((destination, jsonutil.loads(value)["kind"]))
                self.inner.send(destination, key, value)

            def flush(self) -> None:
                self.inner.flush()

            def close(self) -> None:
                self.inner.close()

        teed = kwargs["outputs_factory"]
        kwargs["outputs_factory"] = lambda worker: Watched(teed(worker))
        result = run(settings, RunOptions(), **kwargs)
        profile = result.store.get_many([KeySpace().profile("c0000001")])[0]
        assert profile["type_counts"].get("alert_feedback") == 1
        shown = {(e["destination"], e["kind"]) for e in console.ring.page(limit=10_000)[0]}
        assert {d for d, _ in raised} == {SERVICE, MARKETING}, raised  # the demo raises both...
        assert shown == raised  # ...and every kind of either reaches the console

        with httpx2.Client(base_url=console.url) as client:
            assert client.get("/customers/c0000001").status_code == 401
            client.post("/session", json={"agent": "demo", "password": console.demo_password}).raise_for_status()
            newest = client.get("/alerts", params={"limit": 1}).json()["alerts"][0]
            assert client.get(f"/customers/{newest['customer_id']}").json()["profile"]["customer_id"] == newest["customer_id"]
            late = client.post(f"/alerts/{newest['alert_id']}/feedback", json={"label": "correct"})
            assert late.status_code == 503 and "run --console" in late.json()["error"]  # the demo's input has ended
    finally:
        console.server.stop()


def test_console_password_command_prints_a_hash_for_the_config(monkeypatch: Any, capsys: Any) -> None:
    import io

    from crm_stream.flows.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["console-password", "alice"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    name, hashed = (part.strip().strip('"') for part in line.split("=", 1))
    assert name == "alice" and verify_password("a-long-password", hashed)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["console-password", "alice"]) == 2
