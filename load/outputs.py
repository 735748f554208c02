"""Where benchmarks and evaluations write their results when ``--out`` is not given: never the source tree.

The user's cache directory (``$XDG_CACHE_HOME/crm-stream``, else ``~/.cache/crm-stream``). To keep a result
with the project, pass ``--out load/results/NAME.json`` and commit it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]


def results_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder for results nobody asked to keep.

    >>> results_dir({"XDG_CACHE_HOME": "/tmp/cache"}).as_posix()
    '/tmp/cache/crm-stream'
    """
    env = os.environ if env is None else env
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "crm-stream"


def write_results(results: dict[str, Any], out_path: Path) -> None:
    """Stamp a benchmark's results with when it finished and where they go (relative to the repository when
    inside it), and write them there as indented JSON."""
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["results_file"] = str(out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
