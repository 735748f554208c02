"""``crm-stream replay`` with its two halves timed: run by the benchmark as a child process.

    python -m load.replay_timed EVENTS.jsonl OUT_DIR

Calls the very function the CLI's ``replay`` command calls
(``flows.runtime.replay``, settings from ``config.load()`` as the CLI loads
them) and prints one JSON object: the events and rejects it counted, the
seconds of the dataflow (file -> decode -> identity -> profiles, in memory)
and of writing the contract's profile file afterwards, and the peak RSS.
The split is taken by wrapping ``flows.runtime.write_profiles``, which
``replay`` calls once when the dataflow is done.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import orjson


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    events, out_dir = Path(argv[0]), Path(argv[1])
    started = time.perf_counter()
    import crm_stream.flows.runtime as runtime
    from crm_stream.config import settings as config

    marks: dict[str, float] = {}
    write_profiles = runtime.write_profiles

    def timed_write_profiles(*args, **kwargs):  # type: ignore[no-untyped-def]
        marks["dataflow_done"] = time.perf_counter()
        try:
            return write_profiles(*args, **kwargs)
        finally:
            marks["profiles_done"] = time.perf_counter()

    runtime.write_profiles = timed_write_profiles
    settings = config.load(None)
    imported = time.perf_counter()
    summary = runtime.replay(
        settings,
        events,
        alerts_out=out_dir / "alerts.jsonl",
        profiles_out=out_dir / "profiles.jsonl",
        deadletter_out=out_dir / "dead.jsonl",
    )
    done = time.perf_counter()
    print(
        orjson.dumps(
            {
                "events": summary.events,
                "dead": summary.dead,
                "alerts": summary.alerts,
                "profiles": summary.profiles,
                "import_s": imported - started,
                "dataflow_s": marks["dataflow_done"] - imported,
                "write_profiles_s": marks["profiles_done"] - marks["dataflow_done"],
                "total_s": done - imported,
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
            }
        ).decode()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
