"""End to end: the agents' console (`crm-stream console`, a real process) in a real headless Chromium,
against real Redis and the Kafka-protocol broker.

An alert produced upstream appears on the page within 2 seconds; opening it shows what the customer wrote
(the alert's redacted excerpt, its channel) and the ticket with its messages' anger scores, and the customer's
profile (written to Redis by the engine's own dataflow); "incorrect" puts an ``alert_feedback`` event on the
control topic; an unauthenticated request gets no personal data. The screenshot goes to the test's tmp dir, and to
docs/console.png when that is missing or CRM_STREAM_SCREENSHOT=1 (so plain test runs leave the tree alone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from crm_stream.config import settings as config
from crm_stream.flows.console.auth import hash_password
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.kafka import ensure_topics, produce_records, read_topic
from crm_stream.operators.io.stores import RedisStore
from tests.events import event, lines, purchase, view
from tests.integration.conftest import free_port
from tests.integration.engine_process import CLI, ROOT

PASSWORD = "e2e-password-1"
CUSTOMER = "c-e2e-angry"
APPEAR_WITHIN_S = 2.0
SCREENSHOT = ROOT / "docs" / "console.png"


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            "chromium and chromedriver are needed: run `apt-get install -y chromium chromium-driver` "
            "(bash scripts/test does this when run as root)",
            pytrace=False,
        )
    return chromium, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser_paths()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never try to download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1360,880",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path, log_output=str(tmp_path / "chromedriver.log")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _engine_writes_profile(settings: config.Settings, redis_url: str, tmp_path: Path) -> dict[str, Any]:
    """Run the customer's events through the engine's own dataflow into Redis; return the alert it raised."""
    from bytewax.testing import run_main

    from crm_stream.flows.dataflow import build_flow
    from crm_stream.operators.io.files import CollectingOutputs, FileReader
    from crm_stream.operators.io.interface import SERVICE

    events = [
        view(CUSTOMER, "coffee", day=0.0),
        purchase(CUSTOMER, 180.0, day=0.5),
        view(CUSTOMER, "tea", day=3.0),
        purchase(CUSTOMER, 95.0, day=20.0),
        event("consent", CUSTOMER, marketing_email=True, day=20.1),
        event("ticket_opened", CUSTOMER, ticket_id="t-77", subject="order not delivered", day=30.0),
        event(
            "support_message",
            CUSTOMER,
            ticket_id="t-77",
            direction="inbound",
            channel="email",
            day=30.02,
            text="Hello, my order has not arrived yet. Could you check where it is? Thank you",
        ),
        event(
            "support_message",
            CUSTOMER,
            ticket_id="t-77",
            direction="inbound",
            channel="email",
            day=30.1,
            text="WHERE IS MY ORDER??? This is the third time I'm asking, completely unacceptable!!!",
        ),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(lines(events))
    outputs, store = CollectingOutputs(), RedisStore(redis_url)
    flow = build_flow(settings, reader=FileReader(path), outputs_factory=lambda worker: outputs, store_provider=lambda: store)
    run_main(flow, epoch_interval=timedelta(seconds=1))
    store.close()
    alerts = [jsonutil.loads(v) for v in outputs.records.get(SERVICE, [])]
    angry = [a for a in alerts if a["kind"] == "angry_customer"]
    assert angry, f"the engine should raise an angry_customer alert for these events, raised {alerts}"
    return angry[0]


def _background_alerts() -> list[dict[str, Any]]:
    """A few alerts already on the topic when the console starts (it shows the recent backlog)."""

    def alert(
        n: int, kind: str, customer: str, priority: str, score: float, reasons: list[str], payload: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "alert_id": f"{kind}-e2e{n}",
            "kind": kind,
            "customer_id": customer,
            "ts": f"2026-01-2{n + 7}T1{n}:15:00.000Z",
            "priority": priority,
            "score": score,
            "reasons": reasons,
            "payload": payload,
        }

    return [
        alert(
            0,
            "return_spike",
            "c-e2e-107",
            "medium",
            0.42,
            ["product p-toys-03 refunded 6 times in 14 days, 4.0x its baseline", "customer refunded it on 2026-01-29"],
            {"product_id": "p-toys-03", "refund_rate": 0.4286, "baseline_rate": 0.0714, "order_id": "o-e2e-107"},
        ),
        alert(
            1,
            "churn_risk",
            "c-e2e-031",
            "high",
            0.81,
            [
                "no purchase for 48 days against a usual gap of 14 days",
                "churn model 0.77 (threshold 0.50)",
                "high-value customer (lifetime 1,240.00)",
            ],
            {
                "model_churn_risk": 0.77,
                "lapse_risk": 0.81,
                "last_purchase_at": 1766102400000,
                "days_silent": 48.0,
                "segment": "loyal",
                "offer": None,
            },
        ),
        alert(
            2,
            "angry_customer",
            "c-e2e-212",
            "urgent",
            0.91,
            ["anger score 0.91 (threshold 0.50)", "2 exclamation marks", "high-value customer (lifetime 2,310.40)"],
            {
                "ticket_id": "t-e2e-212",
                "channel": "chat",
                "segment": "champions",
                "open_tickets": 1,
                "excerpt": "The replacement is broken too!! Call me at [phone], I want my money back",
                "ticket_opened_at": "2026-01-29T11:40:00.000Z",
                "ticket_messages": 2,
                "ticket_scores": [
                    {"ts": "2026-01-29T11:42:00.000Z", "score": 0.55},
                    {"ts": "2026-01-29T12:15:00.000Z", "score": 0.91},
                ],
            },
        ),
    ]


def _write_config(path: Path, kafka: config.KafkaSettings, redis_url: str, prefix: str, port: int, audit: Path) -> None:
    topics = "\n".join(f'{name} = "{topic}"' for name, topic in vars(kafka.topics).items())
    path.write_text(f"""
[kafka]
bootstrap_servers = "{kafka.bootstrap_servers}"
group_id = "{kafka.group_id}"
session_timeout_ms = 6000

[kafka.topics]
{topics}

[store]
kind = "redis"
url = "{redis_url}"
key_prefix = "{prefix}"

[audit]
kind = "file"
path = "{audit}"

[console]
host = "127.0.0.1"
port = {port}
session_secret = "e2e-session-secret-0123456789"
backlog_alerts = 50

[console.password_hashes]
alice = "{hash_password(PASSWORD)}"
""")


def _http(method: str, url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the console exited: {log.read_text(errors='replace')[-3000:]}"
        try:
            if _http("GET", url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the console did not answer on {url}: {log.read_text(errors='replace')[-3000:]}")


def test_console_shows_live_alerts_profiles_and_sends_feedback(kafka_settings, redis_url, tmp_path, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    prefix = f"e2e{kafka_settings.group_id[-10:]}"  # keys of this test only, in the shared Redis
    engine_settings = config.load(None, env={}).replace(
        store=config.StoreSettings(kind="redis", url=redis_url, key_prefix=prefix)
    )
    alert = _engine_writes_profile(engine_settings, redis_url, tmp_path)

    ensure_topics(kafka_settings, partitions=2)
    topics = kafka_settings.topics
    produce_records(kafka_settings, ((topics.service_alerts, a["customer_id"], jsonutil.dumps(a)) for a in _background_alerts()))

    port, audit, log = free_port(), tmp_path / "audit.jsonl", tmp_path / "console.log"
    cfg = tmp_path / "console.toml"
    _write_config(cfg, kafka_settings, redis_url, prefix, port, audit)
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            CLI + ["--log-level", "INFO", "console", "--config", str(cfg)], cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        _wait_http(f"{base}/healthz", proc, log)

        # No personal data without signing in.
        status, body = _http("GET", f"{base}/customers/{CUSTOMER}")
        assert status == 401 and CUSTOMER.encode() not in body
        assert not {"segment", "monetary", "profile", "churn_risk"} & set(jsonutil.loads(body))
        assert _http("GET", f"{base}/alerts")[0] == 401

        wait = WebDriverWait(browser, 15)
        browser.get(base + "/")
        wait.until(ec.visibility_of_element_located((By.ID, "signin-agent"))).send_keys("alice")
        browser.find_element(By.ID, "signin-password").send_keys(PASSWORD)
        browser.find_element(By.ID, "signin-submit").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "live"), "live"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#alerts > li")) >= 3)  # the backlog
        assert not browser.find_element(By.ID, "tab-marketing").is_displayed()  # production follows service alerts only

        # Produced upstream now: on the page within 2 seconds, on top.
        produce_records(kafka_settings, [(topics.service_alerts, CUSTOMER, jsonutil.dumps(alert))])
        produced = time.monotonic()
        selector = f'#alerts > li[data-alert-id="{alert["alert_id"]}"]'
        card = WebDriverWait(browser, APPEAR_WITHIN_S, poll_frequency=0.05).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, selector)),
            f"alert {alert['alert_id']} not on the page within {APPEAR_WITHIN_S}s of being produced",
        )
        appeared_s = time.monotonic() - produced
        assert browser.find_elements(By.CSS_SELECTOR, "#alerts > li")[0].get_attribute("data-alert-id") == alert["alert_id"]
        assert alert["reasons"][0] in card.text
        excerpt = alert["payload"]["excerpt"]
        assert excerpt and excerpt.startswith("WHERE IS MY ORDER") and excerpt[:40] in card.text  # what they wrote, at a glance

        # Opening it shows what the customer wrote, the ticket and its history, then the customer's live profile.
        card.click()
        profile = wait.until(ec.visibility_of_element_located((By.ID, "profile")))
        message = browser.find_element(By.ID, "message")
        assert browser.find_element(By.ID, "excerpt").text == excerpt and "by email" in message.text and "t-77" in message.text
        ticket = browser.find_element(By.ID, "ticket")
        assert ticket.is_displayed() and "ticket t-77" in ticket.text.lower() and "2 message(s) from the customer" in ticket.text
        scores = [s["score"] for s in alert["payload"]["ticket_scores"]]
        threshold = engine_settings.rules.angry_threshold
        assert len(scores) == 2 and scores[0] < threshold <= scores[1]  # the polite first message, then the angry one
        assert f"{scores[0]:.2f}" in ticket.text and f"{scores[1]:.2f}" in ticket.text and "(this alert)" in ticket.text
        assert "segment" in browser.find_element(By.ID, "payload").text  # the payload, readable
        assert "{" not in browser.find_element(By.ID, "detail").text  # never raw JSON
        assert "t-77" in profile.text and "$275.00" in profile.text and "churn risk" in profile.text
        assert "support message" in profile.text  # recent activity by type
        reads = [jsonutil.loads(line) for line in audit.read_bytes().splitlines()]
        assert {"actor": "agent:alice", "action": "profile_read", "customer_id": CUSTOMER} in [
            {k: r[k] for k in ("actor", "action", "customer_id")} for r in reads
        ]

        # Claim it (visible to everyone), then say the alert was wrong.
        browser.find_element(By.ID, "btn-claim").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "claim-note"), "claimed by you"))
        browser.find_element(By.ID, "btn-incorrect").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "marked incorrect"))
        shot = tmp_path / "console.png"
        browser.save_screenshot(str(shot))
        if not SCREENSHOT.exists() or os.environ.get("CRM_STREAM_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)

        feedback = []
        deadline = time.monotonic() + 15
        while not feedback and time.monotonic() < deadline:
            feedback = [jsonutil.loads(v) for k, v in read_topic(kafka_settings, topics.control) if k == CUSTOMER]
        assert len(feedback) == 1, f"expected one alert_feedback on {topics.control}, got {feedback}"
        event_ = feedback[0]
        assert {k: event_[k] for k in ("type", "alert_id", "label", "agent_id", "customer_id")} == {
            "type": "alert_feedback",
            "alert_id": alert["alert_id"],
            "label": "incorrect",
            "agent_id": "alice",
            "customer_id": CUSTOMER,
        }
        assert event_["event_id"].startswith("fb-") and event_["ts"]

        # The customer is erased: the engine's tombstone on the alert topic takes their alert off the open page.
        produce_records(kafka_settings, [(topics.service_alerts, CUSTOMER, None)])
        WebDriverWait(browser, 10, poll_frequency=0.05).until(
            ec.invisibility_of_element_located((By.CSS_SELECTOR, selector)), "the erased customer's alert stayed on the page"
        )
        assert "erased" in browser.find_element(By.ID, "detail").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "#alerts > li")) >= 3  # nobody else's went
        print(f"alert on the page {appeared_s * 1000:.0f} ms after it was produced")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
