"""An online anger model that learns from agents' feedback on escalations.

``models.anger.lexicon.score_message`` is a fixed rule over published lexicons. This
model sits on top of it and learns, one label at a time, what this shop's
customers and agents mean by "angry": an ``alert_feedback`` event labels an
``angry_customer`` alert ``correct`` (the message was an escalation: label
``True``) or ``incorrect`` (a false alarm: ``False``).

Features (pure functions below):

* the text, as a bag of tokens (English words and word pairs; Chinese single
  characters and character pairs, so no segmenter is needed), hashed into
  ``n_features`` buckets with a seeded hash and L2-normalised: memory is bounded
  whatever the vocabulary;
* the rule's bounded signals (each scaled to [0, 1]) and its score as a log-odds.

into a ``LogisticRegression`` (zero-initialised, plain SGD, so a seed and a
label order give the same model every time).

Blend. An untrained model says 0.5 about everything, so it cannot replace the
rule on day one. :meth:`AngerModel.predict_proba` returns::

    w = max_model_weight * n / (n + half_weight_labels)     # n = labels learned
    p = (1 - w) * rule_score + w * model_probability

With no label it is exactly the rule's score; after ``half_weight_labels``
labels the model has half of ``max_model_weight``; the rule never drops below
``1 - max_model_weight``, so a model trained on a skewed handful of labels
cannot silence a message that the rule finds furious.

Feedback is biased: agents label alerts, i.e. messages the blend already put
above the threshold. The model learns to tell true from false alarms among
those (precision); it learns about missed angry messages only if agents also
flag those. ``load.eval_anger`` measures both cases.

>>> from models.anger.lexicon import score_message
>>> model = AngerModel(seed=0)
>>> s = score_message("Where is my parcel?")
>>> model.predict_proba("Where is my parcel?", s) == s.score   # before any label: the rule
True
>>> model.learn("Where is my parcel?", s, False)
>>> model.n_learned
1
"""

from __future__ import annotations

import hashlib
import math
import pickle
import re
from typing import Any

from river import compose, feature_extraction, linear_model, optim, preprocessing

from crm_stream.models.anger.lexicon import SIGNALS, AngerScore

FORMAT = b"crm-stream/anger-model/2\n"
"""2: tokens are hashed before the feature hasher (bag_tokens); a version-1 model scored raw tokens."""
DEFAULT_N_FEATURES = 2**16
DEFAULT_HALF_WEIGHT_LABELS = 200
DEFAULT_MAX_MODEL_WEIGHT = 0.8
DEFAULT_LEARNING_RATE = 0.05

# Caps that bring each signal to about [0, 1] (the counts saturate long before these in practice).
_SIGNAL_SCALE = {
    "exclamations": 6.0,
    "exclamation_run": 4.0,
    "question_run": 4.0,
    "caps_words": 4.0,
    "repeat_ask": 2.0,
    "repeat_nth": 5.0,
    "threat": 2.0,
    "complaint": 3.0,
    "polite": 3.0,
    "anger_words": 3.0,
    "profanity": 2.0,
}
NUMERIC_FEATURES = (*(f"s_{name}" for name in SIGNALS), "rule_logodds")

_LATIN_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_SHOUT = re.compile(r"[!！?？]{2,}")
_MAX_TEXT = 1000


def text_tokens(text: str | list[str]) -> list[str]:
    """Tokens for the bag: English words and word pairs, Chinese characters and character pairs, "!!"-like runs.

    >>> text_tokens("Still broken!!! 又坏了")
    ['still', 'broken', 'still broken', '又', '坏', '了', '又坏', '坏了', '!!']
    """
    if isinstance(text, list):  # already tokens (a stored escalation digest); see bag_tokens
        return text
    text = text[:_MAX_TEXT]
    words = _LATIN_WORD.findall(text.lower())
    tokens = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    for run in _CJK_RUN.findall(text):
        tokens.extend(run)
        tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
    tokens.extend("!!" if "!" in m or "！" in m else "??" for m in _SHOUT.findall(text))
    return tokens


def _token_hash(token: str) -> str:
    return hashlib.blake2b(token.encode(), digest_size=5).hexdigest()


def bag_tokens(text: str | list[str]) -> list[str]:
    """The model's tokens: :func:`text_tokens`, each hashed, so an escalation kept to learn from later is a bag of
    hashes, not the customer's words (``AngerModel.digest``). A list is a stored bag, taken as it is.

    >>> bag_tokens("still broken") == bag_tokens(bag_tokens("still broken"))
    True
    """
    if isinstance(text, list):
        return text
    return [_token_hash(t) for t in text_tokens(text)]


def numeric_features(score: AngerScore) -> dict[str, float]:
    """The rule's signals scaled to about [0, 1], and its score as log-odds / 5 (clipped to [-2, 2])."""
    features = {f"s_{name}": min(score.signals.get(name, 0.0) / _SIGNAL_SCALE.get(name, 1.0), 1.0) for name in SIGNALS}
    p = min(max(score.score, 1e-4), 1 - 1e-4)
    features["rule_logodds"] = max(-2.0, min(2.0, math.log(p / (1 - p)) / 5.0))
    return features


def features(text: str, score: AngerScore) -> dict[str, Any]:
    return {"text": text, **numeric_features(score)}


def build_anger_model(
    seed: int = 0, *, n_features: int = DEFAULT_N_FEATURES, learning_rate: float = DEFAULT_LEARNING_RATE
) -> compose.Pipeline:
    """An untrained River pipeline: hashed text tokens + the rule's signals -> logistic regression.

    ``seed`` seeds the feature hash (which tokens share a bucket); the regression
    starts at zero and SGD has no randomness, so equal seeds and equal label
    sequences give equal models.
    """
    text = (
        feature_extraction.BagOfWords(on="text", strip_accents=False, lowercase=False, tokenizer=bag_tokens)
        | preprocessing.FeatureHasher(n_features=n_features, seed=seed)
        | preprocessing.Normalizer(order=2)
    )
    numbers = compose.Select(*NUMERIC_FEATURES)
    return compose.Pipeline(
        compose.TransformerUnion(text, numbers),
        linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate), l2=1e-5),
    )


class AngerModel:
    """The rule's score, blended with an online model as agents' labels arrive (see the module docstring)."""

    def __init__(
        self,
        seed: int = 0,
        *,
        half_weight_labels: int = DEFAULT_HALF_WEIGHT_LABELS,
        max_model_weight: float = DEFAULT_MAX_MODEL_WEIGHT,
        n_features: int = DEFAULT_N_FEATURES,
        learning_rate: float = DEFAULT_LEARNING_RATE,
    ) -> None:
        if not 0.0 <= max_model_weight <= 1.0:
            raise ValueError(f"max_model_weight={max_model_weight!r}: must lie in [0, 1]")
        if half_weight_labels <= 0:
            raise ValueError(f"half_weight_labels={half_weight_labels!r}: must be > 0")
        self.seed = seed
        self.half_weight_labels = half_weight_labels
        self.max_model_weight = max_model_weight
        self.n_features = n_features
        self.learning_rate = learning_rate
        self.pipeline = build_anger_model(seed, n_features=n_features, learning_rate=learning_rate)
        self._n_learned = 0

    @property
    def n_learned(self) -> int:
        return self._n_learned

    @property
    def model_weight(self) -> float:
        n = self._n_learned
        return self.max_model_weight * n / (n + self.half_weight_labels)

    def model_proba(self, text: str, score: AngerScore) -> float:
        """The online model's own probability, without the blend (0.5 before any label)."""
        return float(self.pipeline.predict_proba_one(features(text, score)).get(True, 0.0))

    def predict_proba(self, text: str, score: AngerScore) -> float:
        weight = self.model_weight
        if weight == 0.0:
            return score.score
        return (1.0 - weight) * score.score + weight * self.model_proba(text, score)

    def learn(self, text: str, score: AngerScore, label: bool) -> None:
        """One agent's verdict: ``True`` = the message was an escalation (alert ``correct``)."""
        self.pipeline.learn_one(features(text, score), bool(label))
        self._n_learned += 1

    @staticmethod
    def digest(text: str, score: AngerScore) -> dict[str, Any]:
        """What the model needs to learn from this message later, without the message: its hashed token bag and the
        rule's numeric features (JSON types; kept in the profile until an agent's feedback arrives)."""
        return {"text": bag_tokens(text), **numeric_features(score)}

    def learn_digest(self, digest: dict[str, Any], label: bool) -> None:
        """:meth:`learn` from a :meth:`digest`: the same update as from the text itself."""
        self.pipeline.learn_one(dict(digest), bool(label))
        self._n_learned += 1

    def clone(self) -> AngerModel:
        """An untrained copy with the same parameters."""
        return AngerModel(
            self.seed,
            half_weight_labels=self.half_weight_labels,
            max_model_weight=self.max_model_weight,
            n_features=self.n_features,
            learning_rate=self.learning_rate,
        )

    def to_bytes(self) -> bytes:
        return FORMAT + pickle.dumps(self, protocol=5)

    @classmethod
    def from_bytes(cls, data: bytes) -> AngerModel:
        """Restore a snapshot made by :meth:`to_bytes` (our own state store only: it is a pickle)."""
        if not data.startswith(FORMAT):
            raise ValueError(
                f"not an anger-model snapshot (expected header {FORMAT!r}, got {data[: len(FORMAT)]!r}); "
                "was it written by AngerModel.to_bytes of this version?"
            )
        model = pickle.loads(data[len(FORMAT) :])
        if not isinstance(model, cls):
            raise ValueError(f"anger-model snapshot holds a {type(model).__name__}, not an AngerModel")
        return model
