"""What the commands say: the demo's screen, Ctrl-C routed to a drain, one-line start failures, human summaries."""

from __future__ import annotations

import doctest
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crm_stream.config.settings import load
from crm_stream.flows import cli, preflight, shutdown, terminal
from crm_stream.flows.preflight import StartupError
from crm_stream.flows.shutdown import GracefulStop
from crm_stream.operators.io import files
from crm_stream.operators.io.interface import DEADLETTER, SERVICE

ROOT = Path(__file__).resolve().parents[2]


# -- the demo's screen ---------------------------------------------------------------------------------------

ALERT = (
    b'{"alert_id": "a1", "kind": "angry_customer", "priority": "high", "ts": "2026-02-27T11:07:00Z", '
    b'"reasons": ["anger score 0.98 (threshold 0.60)", "3 exclamation marks", "2 words in capitals", '
    b'"repeated question marks (3)", "gave CSAT 2/5 last time", "NPS detractor (score 3)", "lifetime value 268.50"]}'
)


def _screen(width: int, quiet: bool = False) -> tuple[terminal.Screen, io.StringIO]:
    out = io.StringIO()
    return terminal.Screen(out, quiet=quiet, interactive=True, width=width), out


@pytest.mark.parametrize("width", [80, 60, 132])
def test_event_lines_wrap_at_the_width_under_their_label_never_mid_word(width: int) -> None:
    screen, out = _screen(width)
    shown = files.TerminalOutputs(show=screen.event_line)
    shown.send(SERVICE, "c0000025", ALERT)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ALERT   c0000025: high   angry_customer at 2026-02-27T11:07")
    assert all(len(line) <= width for line in lines), lines
    assert all(line.startswith(" " * 8) for line in lines[1:])  # continuation lines sit under the text, not the label
    words = set(ALERT.decode().replace('"', " ").replace(",", " ").split())
    for line in lines[1:]:
        assert line.split()[0].strip(";:") in {w.strip(";:") for w in words}, line  # a whole word starts each line
    assert shown.kinds == {"angry_customer": 1}


def test_a_very_long_line_is_ellipsized_after_a_few_lines() -> None:
    screen, out = _screen(40)
    screen.event_line("REJECT", "yellow", "word " * 200)
    lines = out.getvalue().splitlines()
    assert len(lines) == terminal.MAX_EVENT_LINES and lines[-1].endswith("...") and all(len(line) <= 40 for line in lines)


def test_quiet_counts_but_draws_nothing() -> None:
    screen, out = _screen(80, quiet=True)
    shown = files.TerminalOutputs(show=screen.event_line, quiet=True)
    shown.send(SERVICE, "c1", ALERT)
    shown.send(DEADLETTER, None, b'{"reason": "line 3: not JSON"}')
    assert out.getvalue() == "" and shown.kinds == {"angry_customer": 1} and shown.rejects == 1


def test_not_a_terminal_prints_plain_whole_lines_and_a_progress_line() -> None:
    out = io.StringIO()
    screen = terminal.Screen(out, interactive=False, plain_progress_s=0.05)
    files.TerminalOutputs(show=screen.event_line).send(SERVICE, "c0000025", ALERT)
    screen.start(lambda: terminal.Progress(10, 0, 1.0, expected_records=100))
    time.sleep(0.3)
    screen.stop()
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text  # no colours, no redraws
    first = text.splitlines()[0]
    assert first.startswith("ALERT   c0000025:") and first.endswith("lifetime value 268.50")  # whole, not cut
    assert "progress: 10 events | 10/s | simulated - | 0:01, 10% of ~100 | alerts: none yet" in text


def test_the_status_line_shows_progress_and_a_stop_in_progress() -> None:
    screen, out = _screen(80)
    screen.start(lambda: terminal.Progress(500, 2, 2.0, 1_767_225_600_000, {"churn_risk": 3}, 76_000, 50.0))
    screen.notice(shutdown.SIGINT_FIRST)
    time.sleep(0.4)
    screen.stop()
    status = terminal.status_text(screen._current())  # type: ignore[arg-type]
    assert status.startswith("stopping: finishing the batches in flight | 500 events (2 rejected) | 250/s")
    assert "simulated 2026-01-01" in status and "0:02 / ~0:50" in status and "alerts: churn_risk 3" in status


def test_the_intro_says_what_is_simulated_and_about_how_long() -> None:
    settings = load(None, env={"CRM_STREAM__SIMULATOR__CUSTOMERS": "40", "CRM_STREAM__SIMULATOR__DAYS": "30"})
    expected = terminal.estimate_records(settings)
    assert 500 < expected < 20_000
    first = terminal.intro_lines(settings, expected)[0]
    assert "40 customers over 30 days" in first and f"about {terminal.about(expected)} events" in first
    assert "paced at 1,500 events/s: about" in first


def test_estimate_is_exact_below_the_sample_and_close_above() -> None:
    from crm_stream.operators.events.simulator import Shop

    small = load(None, env={"CRM_STREAM__SIMULATOR__CUSTOMERS": "30", "CRM_STREAM__SIMULATOR__DAYS": "40"})
    exact = sum(1 for _ in Shop(small.simulator, currency_rates=small.currency_rates).records())
    assert terminal.estimate_records(small) == exact
    assert abs(terminal.estimate_records(small, sample=15) - exact) < 0.5 * exact  # scaled from half the customers


def test_the_demo_summary_names_what_to_try_next_in_lines_that_fit_80_columns() -> None:
    lines = terminal.summary_lines(terminal.RunSummary(10, 0, 1.0, {"new": 3}, {}, demo=True))
    tail = lines[lines.index("Try next:") :]
    assert any("crm-stream replay" in line for line in tail) and any("crm-stream evaluate" in line for line in tail)
    assert any("--console" in line for line in tail) and any("docs/" in line for line in tail)
    assert all(len(line) <= 80 for line in tail)


# -- Ctrl-C ---------------------------------------------------------------------------------------------------


@pytest.fixture()
def restore_sigint() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


def _wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_first_ctrl_c_asks_for_a_drain_instead_of_raising(restore_sigint: None) -> None:
    said: list[str] = []
    with GracefulStop(notify=said.append) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for(lambda: stop.requested)
    assert stop.requested and stop.signal_name == "SIGINT" and said == [shutdown.SIGINT_FIRST]
    # still ours after the drain: the summary is being printed, and a second Ctrl-C must still stop at once
    assert signal.getsignal(signal.SIGINT) == stop._on_signal


def test_handlers_are_given_back_when_no_signal_came(restore_sigint: None) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with GracefulStop():
        assert signal.getsignal(signal.SIGINT) != before[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_second_ctrl_c_exits_130_at_once_with_one_line_and_no_traceback() -> None:
    code = textwrap.dedent(
        """
        import os, signal, time
        from crm_stream.flows.shutdown import GracefulStop
        with GracefulStop(notify=lambda m: None) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            while not stop.requested:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)
        print("not reached")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == shutdown.EXIT_INTERRUPTED, done
    assert done.stdout == "" and done.stderr.splitlines() == [shutdown.SIGINT_SECOND]


# -- one-line start failures ----------------------------------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again at once: nothing listens there


def test_an_unreachable_redis_is_one_sentence_that_says_what_to_check() -> None:
    settings = load(
        None, env={"CRM_STREAM__STORE__KIND": "redis", "CRM_STREAM__STORE__URL": f"redis://127.0.0.1:{_closed_port()}/0"}
    )
    with pytest.raises(StartupError, match=r"did not answer within .*is redis-server running there") as caught:
        preflight.check_services(settings)
    assert "\n" not in str(caught.value)


def test_an_unreachable_broker_is_one_sentence_that_says_what_to_check() -> None:
    settings = load(
        None, env={"CRM_STREAM__SINK__KIND": "kafka", "CRM_STREAM__KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}"}
    )
    with pytest.raises(StartupError, match=r"is the broker running and kafka.bootstrap_servers"):
        preflight.check_services(settings, kafka_timeout_s=1.0)


def test_the_cli_prints_a_startup_error_as_one_line_and_exits_2(monkeypatch: Any, capsys: Any) -> None:
    def refuse(settings: Any) -> None:
        raise StartupError("Redis at redis://x did not answer within 3s: is redis-server running there?")

    monkeypatch.setattr("crm_stream.flows.runtime.check_services", refuse)
    monkeypatch.setenv("CRM_STREAM__SINK__KIND", "null")
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "crm-stream: Redis at redis://x did not answer within 3s: is redis-server running there?"
    assert "Traceback" not in err


# -- what the other commands say ------------------------------------------------------------------------------


def test_evaluate_says_no_labels_yet_for_an_empty_or_garbage_file(tmp_path: Path, capsys: Any) -> None:
    empty, garbage = tmp_path / "empty.jsonl", tmp_path / "garbage.jsonl"
    empty.write_text("")
    garbage.write_text('not json\n{"event_type": "nonsense"}\n')
    assert cli.main(["evaluate", str(empty)]) == 0
    out = capsys.readouterr().out
    assert "no labels yet: the file holds no records" in out and "AUC" not in out
    assert cli.main(["evaluate", str(garbage)]) == 0
    out = capsys.readouterr().out
    assert "no labels yet: all 2 records were rejected" in out and "--deadletter-out" in out and "0.5000" not in out


def test_simulate_then_replay_say_what_was_written_and_where_rejects_went(tmp_path: Path, capsys: Any) -> None:
    shop = tmp_path / "shop.jsonl"
    assert cli.main(["simulate", "--out", str(shop), "--customers", "12", "--days", "20", "--bad-rate", "0.02"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("wrote ") and "12 customers over 20 days" in err and "malformed on purpose" in err
    assert "{" not in err and f"crm-stream replay {shop}" in err  # words, not a dict; and what to do next
    records = len(shop.read_text().splitlines())
    assert f"wrote {records:,} records" in err

    out = {name: str(tmp_path / f"{name}.jsonl") for name in ("alerts", "profiles", "rejects")}
    assert cli.main(["replay", str(shop), "--alerts-out", out["alerts"], "--profiles-out", out["profiles"]]) == 0
    err = capsys.readouterr().err
    assert "rejected (not kept: add --deadletter-out FILE" in err
    args = [
        "replay",
        str(shop),
        "--alerts-out",
        out["alerts"],
        "--profiles-out",
        out["profiles"],
        "--deadletter-out",
        out["rejects"],
    ]
    assert cli.main(args) == 0
    rejected = len(Path(out["rejects"]).read_text().splitlines())
    assert rejected > 0 and f"{rejected:,} rejected -> {out['rejects']}" in capsys.readouterr().err


def test_simulate_help_shows_the_defaults(capsys: Any) -> None:
    with pytest.raises(SystemExit):
        cli.main(["simulate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for option, default in [("--customers", "300"), ("--days", "180"), ("--seed", "7"), ("--bad-rate", "0")]:
        assert option in help_text and f"(default: {default}" in help_text.split(option, 2)[-1], option


def test_score_alerts_writes_where_asked_or_to_the_cache_never_into_the_source_tree(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    from load import score_alerts

    assert doctest.testmod(score_alerts).failed == 0  # default_out's example
    results = ROOT / "load" / "results"
    before = set(results.iterdir())
    asked = tmp_path / "mine" / "alerts.json"
    assert score_alerts.main(["--customers", "12", "--days", "20", "--out", str(asked)]) == 0
    assert asked.is_file() and f"result written to {asked}" in capsys.readouterr().out
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert score_alerts.main(["--customers", "12", "--days", "20"]) == 0
    cached = list((tmp_path / "cache" / "crm-stream").glob("alerts-*.json"))
    assert len(cached) == 1 and cached[0].read_bytes() == asked.read_bytes()  # same shop, same seed: same result
    assert set(results.iterdir()) == before
