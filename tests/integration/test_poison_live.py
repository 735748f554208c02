"""No record can stop the engine (issue 14, item 1), on the live path: ``crm-stream run`` as a child process, a file
source, a file sink and the real Redis store (which encodes every visitor buffer and profile with orjson, unlike
replay's memory store: the crash this guards against happened only there).

Hypothesis generates records around every limit that matters downstream (nesting past what orjson writes, messages
past ``kafka.max_message_bytes``, odd unicode, NaN and big numbers written by hand, unknown fields, bytes that are
not JSON) and asserts the engine exits 0 with every record accounted for: applied to a profile, held in a visitor's
buffer, or dead-lettered with its line. Each example is one engine run (~3 s), so examples are few and large.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.integration.engine_process import CLI, ROOT, applied_events

T0 = 1_760_000_000_000
MAX_BYTES = 50_000  # kafka.max_message_bytes for these runs: "huge" records stay cheap to generate
TYPES = {"page_view": {"url": "/p"}, "search": {"query": "q"}, "purchase": {"order_id": "o", "amount": 5.0, "currency": "USD"}}


def _nested(levels: int, kind: str) -> bytes:
    return (b'{"k":' if kind == "object" else b"[") * levels + b"0" + (b"}" if kind == "object" else b"]") * levels


# A hostile value for an unknown field ``x``, as JSON text written by hand (orjson would refuse to write most of them).
hostile_value = st.one_of(
    st.builds(
        _nested, st.sampled_from([1, 8, 62, 63, 64, 65, 200, 254, 255, 300, 1_023, 1_100]), st.sampled_from(["object", "array"])
    ),
    st.sampled_from([1_000, MAX_BYTES - 200, MAX_BYTES + 10]).map(lambda n: b'"' + b"y" * n + b'"'),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"123456789012345678901234567890", b"-0", b"1e-400"]),
    st.sampled_from([b'"\\ud800"', b'"\\udfff\\ud800"', b'"\\u0000"', b'"\xed\xa0\x80"', b'"\xff"', b'"\\u2028\xe2\x80\xa8"']),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=30).map(orjson.dumps),
    st.integers(1, 3_000).map(lambda n: orjson.dumps({f"k{i}": i for i in range(n)})),  # many keys
    st.sampled_from([b'"' + b'\\"' * 9_000 + b'"', b'"' + b"\\u0001" * 8_000 + b'"']),  # needs escaping again downstream
)


@st.composite
def records(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """(what it is, the line) pairs: events of customers and of anonymous visitors with a hostile field, and garbage."""
    out: list[tuple[str, bytes]] = []
    for i in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["customer", "visitor", "garbage"]))
        if kind == "garbage":
            line = draw(st.binary(max_size=200)).replace(b"\n", b" ").replace(b"\r", b" ")
            out.append(("garbage", line))
            continue
        type_ = draw(st.sampled_from(sorted(TYPES)))
        who = {"customer_id": f"c{i % 5}"} if kind == "customer" else {"anonymous_id": f"a{i}"}
        base = orjson.dumps({"event_id": f"e{i}", "type": type_, **who, "ts": T0 + i * 1_000, **TYPES[type_]})
        out.append((kind, base[:-1] + b',"x":' + draw(hostile_value) + b"}"))
    return out


def _run_engine(tmp_path: Path, redis_url: str, lines: list[bytes]) -> subprocess.CompletedProcess[bytes]:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    env = dict(os.environ)
    env.update(
        CRM_STREAM__SOURCE__KIND="file",
        CRM_STREAM__SOURCE__PATH=str(source),
        CRM_STREAM__SINK__KIND="file",
        CRM_STREAM__SINK__PATH=str(tmp_path / "out"),
        CRM_STREAM__STORE__KIND="redis",
        CRM_STREAM__STORE__URL=redis_url,
        CRM_STREAM__RECOVERY__DIR=str(tmp_path / "recovery"),
        CRM_STREAM__KAFKA__MAX_MESSAGE_BYTES=str(MAX_BYTES),
        CRM_STREAM__AUDIT__KIND="file",
        CRM_STREAM__AUDIT__PATH=str(tmp_path / "audit.jsonl"),
        CRM_STREAM__METRICS__PORT="0",
    )
    return subprocess.run(CLI + ["run"], env=env, cwd=ROOT, capture_output=True, timeout=180)


_counter = [0]


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(records())
@example(
    [
        (
            "visitor",
            b'{"event_id":"e0","type":"page_view","anonymous_id":"a0","ts":1760000000000,"url":"/","x":'
            + _nested(300, "object")
            + b"}",
        )
    ]
)
def test_the_engine_exits_0_with_every_record_applied_held_or_dead_lettered(tmp_path, redis_url, fresh_redis, generated):
    _counter[0] += 1
    run_dir = tmp_path / f"run{_counter[0]}"
    run_dir.mkdir()
    fresh_redis.flushdb()
    lines = [line for _, line in generated]
    done = _run_engine(run_dir, redis_url, lines)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]

    dead_path = run_dir / "out" / "worker-0" / "deadletter.jsonl"
    dead = [orjson.loads(d) for d in dead_path.read_bytes().splitlines()] if dead_path.exists() else []
    for letter in dead:
        assert len(orjson.dumps(letter)) <= MAX_BYTES and "internal error" not in letter["reason"], letter["reason"][:300]
    dead_lines = {d["line"] for d in dead}
    assert len(dead_lines) == len(dead)  # one dead letter per record, never two
    client = redis.Redis.from_url(redis_url)
    buffered = 0
    for key in client.scan_iter(match="crm:anon:*"):
        buffered += len(orjson.loads(client.get(key))["events"])
    applied = applied_events(client)
    blank = sum(1 for line in lines if not line.strip())  # blank lines are not records (operators/io/files.py)
    assert applied + buffered + len(dead) == len(lines) - blank, (applied, buffered, sorted(dead_lines))
    # Garbage is never applied; the regression record (300 levels) is dead-lettered, naming the field.
    for number, (kind, line) in enumerate(generated, start=1):
        if kind == "garbage" and line.strip():
            assert number in dead_lines or _is_event(line)
    if b'"x":' + _nested(300, "object") in lines[0]:
        assert "field 'x'" in dead[0]["reason"] and "64 levels" in dead[0]["reason"]


def _is_event(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False
