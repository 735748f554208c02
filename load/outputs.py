"""Where benchmarks and evaluations write their results when ``--out`` is not given: never the source tree.

The user's cache directory (``$XDG_CACHE_HOME/crm-stream``, else ``~/.cache/crm-stream``). To keep a result
with the project, pass ``--out load/results/NAME.json`` and commit it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def results_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder for results nobody asked to keep.

    >>> results_dir({"XDG_CACHE_HOME": "/tmp/cache"}).as_posix()
    '/tmp/cache/crm-stream'
    """
    env = os.environ if env is None else env
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "crm-stream"
