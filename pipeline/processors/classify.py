"""Classification of normalised report texts into project categories (or agencies).

Contract every classifier keeps: ``classify(texts)`` takes a batch of normalised texts (see
:func:`pipeline.processors.normalise.normalise`) and returns one :class:`Classification` per text, in
order. Batches, because vectorising a batch is where speed is.

* :class:`LexiconClassifier` — the default, shipped with the project, needs no training: a weighted
  keyword lexicon (``pipeline/data/lexicon.v1.json``, ops-editable) over the words, their root forms
  (``menumpuk`` → ``tumpuk``, from the affixed forms of every lexicon word) and the phrases of the text.
  Category = the highest score; confidence in [0, 1] grows with the score and with its margin over the
  runner-up.
* :class:`TrainedClassifier` — scikit-learn: TF-IDF of word 1–2-grams and character 2–5-grams plus the
  lexicon's scores as extra features, a linear SVM, probabilities calibrated by cross-validation
  (sigmoid); confidence = the calibrated probability of the predicted label. :func:`train` fits one;
  :meth:`TrainedClassifier.save` / :func:`load_model` keep it in a versioned joblib file. Labels may be
  project categories or handling agencies (the router accepts both).

:func:`load_classifier` returns the trained model when given a path, else the lexicon classifier.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from .normalise import affixed_forms, root_words

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
LEXICON_PATH = DATA_DIR / "lexicon.v1.json"

MODEL_FORMAT = "crm-triage-model"
MODEL_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Classification:
    category: str | None
    confidence: float


class Classifier(Protocol):
    name: str

    def classify(self, texts: Sequence[str]) -> list[Classification]: ...


class ModelFileError(ValueError):
    """A model file is missing, unreadable or of another format/version; the message names the file."""


# --- lexicon ------------------------------------------------------------------------------------------


class LexiconClassifier:
    """Weighted keyword lexicon over words, stems and phrases; needs no training."""

    name = "lexicon-v1"

    def __init__(self, lexicon: dict[str, dict[str, float]], name: str | None = None) -> None:
        if not lexicon:
            raise ValueError("empty lexicon")
        self.categories: list[str] = sorted(lexicon)
        self._index: dict[str, list[tuple[int, float]]] = {}
        self._max_n = 1
        for ci, cat in enumerate(self.categories):
            for term, weight in lexicon[cat].items():
                words = term.lower().split()
                if not words:
                    continue
                self._max_n = max(self._max_n, len(words))
                self._index.setdefault(" ".join(words), []).append((ci, float(weight)))
        # Root form of every inflected/derived form of the lexicon's words (menumpuk → tumpuk,
        # pemangkasan → pangkas): matching needs no stemmer at run time.
        self._roots: dict[str, str] = {}
        # A form that is a dictionary word of its own (sekali, pejalan) is not read as an affixed root.
        words_of_their_own = root_words()
        for word in sorted({w for t in self._index for w in t.split()}, key=len):
            for form in affixed_forms(word):
                if form != word and form not in words_of_their_own:
                    self._roots.setdefault(form, word)
        self._root_keys = frozenset(self._roots)
        self._unigrams = frozenset(t for t in self._index if " " not in t)
        #: first words of the multi-word terms: only there can a phrase start
        self._starts = frozenset(t.split()[0] for t in self._index if " " in t)
        if name:
            self.name = name

    def scores(self, text: str) -> list[float]:
        """Score of every category (in :attr:`categories` order) for one normalised text."""
        scores = [0.0] * len(self.categories)
        for term in self._matched_terms(text):
            for ci, w in self._index[term]:
                scores[ci] += w
        return scores

    def _matched_terms(self, text: str) -> set[str]:
        toks = text.split()
        tokset = set(toks)
        matched = tokset & self._unigrams
        seqs = [toks]
        inflected = tokset & self._root_keys
        if inflected:
            roots = self._roots
            matched |= {roots[t] for t in inflected} & self._unigrams
            seqs.append([roots.get(t, t) for t in toks])
        if tokset & self._starts or inflected:
            index, starts, max_n = self._index, self._starts, self._max_n
            for seq in seqs:
                n = len(seq)
                for i, first in enumerate(seq):
                    if first in starts:
                        for k in range(2, min(max_n, n - i) + 1):
                            gram = " ".join(seq[i : i + k])
                            if gram in index:
                                matched.add(gram)
        return matched

    @staticmethod
    def confidence(top: float, second: float) -> float:
        """Grows with the evidence (1 - e^(-top/2)) and with the margin (top / (top + second))."""
        if top <= 0:
            return 0.0
        return round((top / (top + second)) * (1.0 - math.exp(-top / 2.0)), 4)

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        out: list[Classification] = []
        index, categories = self._index, self.categories
        for text in texts:
            scores: dict[int, float] = {}
            for term in self._matched_terms(text):
                for ci, w in index[term]:
                    scores[ci] = scores.get(ci, 0.0) + w
            if not scores:
                out.append(Classification(None, 0.0))
                continue
            # highest score wins; ties go to the category first in alphabetical order
            best, top, second = -1, 0.0, 0.0
            for ci, sc in scores.items():
                if sc > top or (sc == top and sc > 0 and ci < best):
                    best, top, second = ci, sc, max(second, top)
                elif sc > second:
                    second = sc
            if best < 0:
                out.append(Classification(None, 0.0))
                continue
            out.append(Classification(categories[best], self.confidence(top, second)))
        return out


def read_lexicon(path: str | Path = LEXICON_PATH) -> dict[str, dict[str, float]]:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the lexicon: {exc}") from None
    if doc.get("format") != "crm-triage-lexicon" or doc.get("version") != 1:
        raise ValueError(f"{path}: not a version-1 crm-triage-lexicon file")
    cats = doc.get("categories")
    if not isinstance(cats, dict) or not cats:
        raise ValueError(f"{path}: 'categories' must be a non-empty object")
    for cat, terms in cats.items():
        if not isinstance(terms, dict) or not all(isinstance(w, int | float) for w in terms.values()):
            raise ValueError(f"{path}: category {cat!r} must map terms to numeric weights")
    return cats


@lru_cache(maxsize=4)
def load_lexicon_classifier(path: str | None = None) -> LexiconClassifier:
    return LexiconClassifier(read_lexicon(path or LEXICON_PATH))


# --- trained ------------------------------------------------------------------------------------------


class LexiconFeatures:
    """scikit-learn transformer: the lexicon's category scores as features (log-scaled)."""

    def __init__(self, lexicon_path: str | None = None) -> None:
        self.lexicon_path = lexicon_path

    def fit(self, texts: Sequence[str], y: Any = None) -> LexiconFeatures:
        return self

    def transform(self, texts: Sequence[str]) -> Any:
        import numpy as np
        from scipy.sparse import csr_matrix

        lex = load_lexicon_classifier(self.lexicon_path)
        rows = np.log1p(np.array([lex.scores(t) for t in texts], dtype=np.float64))
        return csr_matrix(rows)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"lexicon_path": self.lexicon_path}

    def set_params(self, **params: Any) -> LexiconFeatures:
        for k, v in params.items():
            setattr(self, k, v)
        return self


def build_pipeline(calibration_folds: int = 3, seed: int = 0) -> Any:
    """The untrained model: word + char TF-IDF + lexicon scores → calibrated linear SVM."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.svm import LinearSVC

    features = FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=200_000)),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, max_features=300_000
                ),
            ),
            ("lexicon", LexiconFeatures()),
        ]
    )
    svm = LinearSVC(C=0.5, class_weight="balanced", random_state=seed)
    # ensemble=False: one SVM fitted on all the data decides; the cross-validated fits only calibrate
    # its scores into probabilities (more accurate here than averaging the folds' models, and faster)
    model = CalibratedClassifierCV(svm, cv=calibration_folds, method="sigmoid", ensemble=False)
    return Pipeline([("features", features), ("model", model)])


class TrainedClassifier:
    """A fitted :func:`build_pipeline` model with its metadata."""

    def __init__(self, pipeline: Any, meta: dict[str, Any]) -> None:
        self.pipeline = pipeline
        self.meta = meta
        self.labels: list[str] = [str(c) for c in pipeline.classes_]
        self.name = f"trained-v{MODEL_FORMAT_VERSION}:{meta.get('trained_at', '?')}"

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        if not texts:
            return []
        proba = self.pipeline.predict_proba(list(texts))
        best = proba.argmax(axis=1)
        return [Classification(self.labels[int(j)], round(float(proba[i, j]), 4)) for i, j in enumerate(best)]

    def save(self, path: str | Path) -> None:
        import joblib

        joblib.dump(
            {
                "format": MODEL_FORMAT,
                "version": MODEL_FORMAT_VERSION,
                "meta": self.meta,
                "pipeline": self.pipeline,
            },
            str(path),
            compress=3,
        )


def train(
    texts: Sequence[str], labels: Sequence[str], *, calibration_folds: int = 3, seed: int = 0
) -> TrainedClassifier:
    """Fit a :class:`TrainedClassifier` on normalised texts and their labels.

    Every label needs at least ``calibration_folds`` examples (calibration is cross-validated); drop or
    merge rarer labels first (``crm-pipeline train`` does so and says which).
    """
    import sklearn

    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    if len(counts) < 2:
        raise ValueError("need at least two different labels to train")
    rare = sorted(k for k, v in counts.items() if v < calibration_folds)
    if rare:
        raise ValueError(f"labels with fewer than {calibration_folds} examples: {', '.join(rare)}")
    pipeline = build_pipeline(calibration_folds=calibration_folds, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        pipeline.fit(list(texts), list(labels))
    meta = {
        "trained_at": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "n_examples": len(texts),
        "label_counts": dict(sorted(counts.items())),
        "sklearn_version": sklearn.__version__,
    }
    return TrainedClassifier(pipeline, meta)


def load_model(path: str | Path) -> TrainedClassifier:
    import joblib
    import sklearn

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        # joblib/pickle: load only model files you or your team wrote (they can run code when loaded).
        doc = joblib.load(str(path))
    except Exception as exc:
        raise ModelFileError(f"{path}: not a readable model file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not a {MODEL_FORMAT} file")
    if doc.get("version") != MODEL_FORMAT_VERSION:
        found = doc.get("version")
        raise ModelFileError(f"{path}: format version {found}; this pipeline reads {MODEL_FORMAT_VERSION}")
    meta = doc.get("meta", {})
    if meta.get("sklearn_version") not in (None, sklearn.__version__):
        warnings.warn(
            f"{path}: trained with scikit-learn {meta['sklearn_version']}, running {sklearn.__version__}",
            stacklevel=2,
        )
    return TrainedClassifier(doc["pipeline"], meta)


def load_classifier(model_path: str | None = None) -> Classifier:
    """The trained model at ``model_path``, or the built-in lexicon classifier."""
    if model_path:
        return load_model(model_path)
    return load_lexicon_classifier()
