"""The CLI as a user runs it: simulate to Kafka, one-line errors when a server is missing, Ctrl-C, the demo in a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import time
import uuid

import orjson
import pytest
import redis

from crm_stream.flows import shutdown
from crm_stream.operators.io.kafka import read_topic
from tests.integration.engine_process import CLI, ROOT, applied_events, engine_env


def test_simulate_to_kafka_fills_the_input_topics(kafka_settings, redis_url, tmp_path):
    env = engine_env(kafka_settings, redis_url, tmp_path / "rec")
    done = subprocess.run(
        CLI + ["simulate", "--to-kafka", "--customers", "20", "--days", "10"], env=env, cwd=ROOT, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    produced = int(done.stderr.split(b"produced ")[1].split()[0])
    topics = kafka_settings.topics
    found = sum(len(read_topic(kafka_settings, t, timeout_s=10)) for t in topics.inputs())
    assert found == produced > 100


def test_profile_of_an_unknown_customer_and_an_unreachable_redis_say_what_to_do(redis_url, kafka_settings, tmp_path):
    env = engine_env(kafka_settings, redis_url, tmp_path / "rec")
    missing = subprocess.run(CLI + ["profile", "nobody"], env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert missing.returncode == 1 and b"no profile for customer 'nobody'" in missing.stderr
    env["CRM_STREAM__STORE__URL"] = "redis://127.0.0.1:1/0"
    down = subprocess.run(CLI + ["profile", "c1"], env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert down.returncode == 1 and b"is redis-server running" in down.stderr


# -- clean stops and one-line failures (issue 14 item 4), what the demo looks like (issue 18 item 2) ------------

DEMO_ENV = {"CRM_STREAM__SIMULATOR__CUSTOMERS": "300", "CRM_STREAM__SIMULATOR__DAYS": "180"}  # paced: ~50 s, stopped early


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # released at once: nothing listens there


def _no_crash(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text and "panicked" not in text and "KeyboardInterrupt" not in text, text[-3000:]


def test_ctrl_c_during_run_drains_prints_the_summary_and_exits_0(tmp_path):
    env = {**os.environ, **DEMO_ENV, "CRM_STREAM__AUDIT__PATH": str(tmp_path / "audit.jsonl")}
    proc = subprocess.Popen(CLI + ["run"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:  # the engine is running once it prints what it finds
        seen.append(line)
        if line.startswith(("PROFILE", "ALERT", "TRIGGER")) and len(seen) > 20:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    _no_crash(out, err)
    assert seen[0].startswith("crm-stream demo: a simulated shop of 300 customers over 180 days")
    summary = out[out.index("Stopped by Ctrl-C after") :]
    assert "everything read was processed and written" in summary and "Customer profiles by segment" in summary
    assert "Try next:" in summary
    assert err.strip().splitlines() == [shutdown.SIGINT_FIRST]  # said once, on stderr (stdout is a pipe here)


def test_run_with_no_broker_listening_prints_one_line_and_exits_2(kafka_settings, redis_url, tmp_path):
    env = engine_env(
        kafka_settings, redis_url, tmp_path / "rec", CRM_STREAM__KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{_closed_port()}"
    )
    done = subprocess.run(CLI + ["run"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    _no_crash(done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("crm-stream: could not read topic metadata from Kafka at 127.0.0.1:"), lines
    assert "is the broker running and kafka.bootstrap_servers" in lines[0]


def test_run_with_redis_unreachable_prints_one_line_and_exits_2(kafka_settings, tmp_path):
    env = engine_env(kafka_settings, f"redis://127.0.0.1:{_closed_port()}/0", tmp_path / "rec")
    done = subprocess.run(CLI + ["run"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    _no_crash(done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("crm-stream: Redis at redis://127.0.0.1:"), lines
    assert "is redis-server running there" in lines[0]


def test_run_with_missing_input_topics_prints_one_line_and_exits_2(kafka_settings, redis_url, tmp_path):
    env = engine_env(kafka_settings, redis_url, tmp_path / "rec")  # this test's topic names: never created
    done = subprocess.run(CLI + ["run"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "do not exist on Kafka" in lines[0] and kafka_settings.topics.clickstream in lines[0], lines


def _run_in_a_terminal(args: list[str], columns: int, env: dict[str, str], timeout_s: float = 180) -> tuple[int, str]:
    """Run the CLI in a pseudo-terminal ``columns`` wide (as a person would see it); its exit status and raw output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty, sized like a window
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        os.chdir(ROOT)
        os.execve(CLI[0], CLI + args, env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    chunks, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", errors="replace")


@pytest.mark.parametrize("quiet", [False, True], ids=["lines", "quiet"])
def test_the_demo_fits_an_80_column_terminal_with_a_live_status_line(quiet, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # the width comes from the terminal
    env.update(
        TERM="xterm-256color",
        CRM_STREAM__SIMULATOR__CUSTOMERS="60",
        CRM_STREAM__SIMULATOR__DAYS="60",
        CRM_STREAM__SIMULATOR__RATE="0",
        CRM_STREAM__AUDIT__PATH=str(tmp_path / "audit.jsonl"),
    )
    status, raw = _run_in_a_terminal(["run"] + (["--quiet"] if quiet else []), 80, env)
    assert status == 0, raw[-3000:]
    _no_crash(raw)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)  # colours and cursor moves
    pieces = re.split(r"[\r\n]", text)  # every piece is written from the first column
    assert max(len(piece) for piece in pieces) <= 80, max(pieces, key=len)
    assert re.search(r"\d[\d,]* events \| [\d,]+/s \| simulated 2026-\d\d-\d\d \| ", text), "no status line"
    assert "Done: " in text and "Try next:" in text
    event_lines = [p for p in pieces if p.startswith(("ALERT ", "TRIGGER ", "PROFILE ", "REJECT "))]
    assert (not event_lines) if quiet else len(event_lines) > 20


def _sources_applied(client: redis.Redis, prefix: str) -> set[str]:
    """The input partitions (``topic#n``) whose events some stored profile has applied (its ``offsets``)."""
    keys = list(client.scan_iter(match=f"{prefix}:profile:*", count=1000))
    blobs = client.mget(keys) if keys else []
    return {source.split("|")[0] for blob in blobs if blob for source in orjson.loads(blob).get("offsets", {})}


def test_ctrl_c_on_the_kafka_engine_drains_commits_and_exits_0(kafka_settings, redis_url, tmp_path):
    prefix = f"ctrlc{uuid.uuid4().hex[:8]}"  # this test's keys only: the session's Redis is shared
    env = engine_env(kafka_settings, redis_url, tmp_path / "rec", CRM_STREAM__STORE__KEY_PREFIX=prefix)
    made = subprocess.run(
        CLI + ["simulate", "--to-kafka", "--customers", "40", "--days", "40"], env=env, cwd=ROOT, capture_output=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    client = redis.Redis.from_url(redis_url)
    proc = subprocess.Popen(CLI + ["run"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # Every input partition read and applied before the stop: a partition not read yet has no position to commit
    # (the engine reads all partitions through one consumer, and its first batches may come from one partition).
    partitions = len(kafka_settings.topics.inputs()) * 4  # 4 partitions each
    while applied_events(client, prefix=prefix) == 0 or len(_sources_applied(client, prefix)) < partitions:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    _no_crash(out, err)
    stopped = re.search(r"Stopped by Ctrl-C after ([\d,]+) events: .*; (\d+) partition position\(s\) committed", out)
    assert stopped, out
    assert int(stopped.group(1).replace(",", "")) > 0 and int(stopped.group(2)) == partitions
    assert f"crm-stream: {shutdown.SIGINT_FIRST}" in err
