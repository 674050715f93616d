"""The trained classifier: a city's own labelled history → the handling agency (or a category).

Features (:class:`SignalFeatures`): TF-IDF of word 1–2-grams and character 2–5-grams of the normalised
text, the lexicon's category scores, and one-hot signals the text does not carry: the category the
citizen picked (as a key, so "Parkir liar " and "Parkir Liar" are one), the channel, and the located
place (its kota, and the category × kota pair), because the same complaint goes to the kelurahan in
one place and to Satpol PP in another. A missing signal is simply absent: a report
without a hint or a place gets the best decision its text allows.

Model: a linear SVM (balanced classes) whose scores are turned into probabilities by cross-validated
sigmoid calibration; then :func:`train` measures it on ``folds`` held-out folds and fits a
:class:`~pipeline.processors.calibration.Calibration` on those held-out decisions, so ``confidence``
is the observed probability of being right and :meth:`TrainedClassifier.threshold_for` gives the
routing threshold of a target precision. The held-out metrics travel with the model (``meta["cv"]``).

A model is saved as a versioned joblib document (format ``crm-triage-model`` v2). joblib is pickle:
load only model files and registry rows your own team wrote.
"""

from __future__ import annotations

import hashlib
import io
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .calibration import Calibration, coverage_at_precision, reliability_table
from .classify import (
    Classification,
    Classifier,
    ModelFileError,
    Signals,
    as_signals,
    hint_key,
    load_lexicon_classifier,
)

MODEL_FORMAT = "crm-triage-model"
MODEL_FORMAT_VERSION = 2
#: the precision the held-out coverage figure is quoted at (the routing default)
QUOTED_PRECISION = 0.95


def categorical(s: Signals) -> dict[str, float]:
    """The one-hot signals of a report besides its text."""
    out: dict[str, float] = {}
    hint = hint_key(s.category_hint)
    if hint:
        out[f"hint={hint}"] = 1.0
    if s.channel:
        out[f"channel={s.channel}"] = 1.0
    r = s.region
    if r is not None and r.kota_code:
        # The place as the kota and the category in that kota: who handles a complaint differs by
        # kota (each has its own Suku Dinas and practice). One-hots of the 44 kecamatan and 267
        # kelurahan were tried too: on the real CRM reports they lowered what could be dispatched at
        # 95% precision (0.52 → 0.49, 5-fold), too few reports per kelurahan to learn from.
        out[f"kota={r.kota_code}"] = 1.0
        if hint:
            out[f"hint×kota={hint}|{r.kota_code}"] = 1.0
    return out


class SignalFeatures:
    """scikit-learn transformer: :class:`Signals` → text TF-IDF + lexicon scores + one-hot signals."""

    def __init__(self, signals: bool = True) -> None:
        self.signals = signals

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"signals": self.signals}

    def set_params(self, **params: Any) -> SignalFeatures:
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def fit(self, items: Sequence[Signals], y: Any = None) -> SignalFeatures:
        from sklearn.feature_extraction import DictVectorizer
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = [s.text for s in items]
        self.words_ = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=200_000)
        self.chars_ = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, max_features=300_000
        )
        self.words_.fit(texts)
        self.chars_.fit(texts)
        self.onehot_ = DictVectorizer()
        self.onehot_.fit([categorical(s) if self.signals else {} for s in items] or [{}])
        return self

    def transform(self, items: Sequence[Signals]) -> Any:
        import numpy as np
        from scipy.sparse import csr_matrix, hstack

        texts = [s.text for s in items]
        lex = load_lexicon_classifier()
        scores = csr_matrix(np.log1p(np.array([lex.scores(t) for t in texts], dtype=np.float64)))
        parts = [self.words_.transform(texts), self.chars_.transform(texts), scores]
        if self.signals:
            parts.append(self.onehot_.transform([categorical(s) for s in items]))
        return hstack(parts).tocsr()

    def fit_transform(self, items: Sequence[Signals], y: Any = None) -> Any:
        return self.fit(items, y).transform(items)


def build_pipeline(calibration_folds: int = 3, seed: int = 0, signals: bool = True) -> Any:
    """The untrained model: features → linear SVM → sigmoid-calibrated class probabilities."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=0.5, class_weight="balanced", random_state=seed)
    # ensemble=False: one SVM fitted on all the data decides; the cross-validated fits only calibrate
    # its scores into probabilities (more accurate here than averaging the folds' models, and faster)
    model = CalibratedClassifierCV(svm, cv=calibration_folds, method="sigmoid", ensemble=False)
    return Pipeline([("features", SignalFeatures(signals)), ("model", model)])


class TrainedClassifier:
    """A fitted :func:`build_pipeline` model, its held-out calibration and its metadata."""

    def __init__(self, pipeline: Any, meta: dict[str, Any], calibration: Calibration | None = None) -> None:
        self.pipeline = pipeline
        self.meta = meta
        self.calibration = calibration
        self.labels: list[str] = [str(c) for c in pipeline.classes_]
        fallback = f"trained-v{MODEL_FORMAT_VERSION}:{meta.get('trained_at', '?')}"
        self.model_id: str = meta.get("model_id") or fallback
        self.name = self.model_id

    def threshold_for(self, precision: float) -> float | None:
        return self.calibration.threshold_for(precision) if self.calibration else None

    def probabilities(self, items: Sequence[Signals | str]) -> Any:
        return self.pipeline.predict_proba(as_signals(items))

    def classify(self, items: Sequence[Signals | str]) -> list[Classification]:
        if not items:
            return []
        proba = self.probabilities(items)
        cal = self.calibration
        out = []
        for row in proba:
            order = row.argsort()[::-1][:3]
            top = float(row[order[0]])
            conf = cal(top) if cal is not None else top
            # the runners-up share what the calibrated top leaves, in their own proportions
            scale = (1.0 - conf) / (1.0 - top) if top < 1.0 else 0.0
            cands = [(self.labels[int(order[0])], round(conf, 4))]
            cands += [(self.labels[int(j)], round(float(row[j]) * scale, 4)) for j in order[1:]]
            out.append(Classification(cands[0][0], cands[0][1], tuple(cands)))
        return out

    def dumps(self) -> bytes:
        import joblib

        buf = io.BytesIO()
        joblib.dump(
            {
                "format": MODEL_FORMAT,
                "version": MODEL_FORMAT_VERSION,
                "meta": self.meta,
                "calibration": self.calibration.to_dict() if self.calibration else None,
                "pipeline": self.pipeline,
            },
            buf,
            compress=3,
        )
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.dumps())


def macro_f1(gold: Sequence[str], pred: Sequence[str]) -> float:
    f1s = []
    for label in sorted(set(gold)):
        tp = sum(g == label and p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, pred, strict=True))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(f1s) / len(f1s) if f1s else 0.0


def held_out(
    items: Sequence[Signals],
    labels: Sequence[str],
    *,
    folds: int,
    seed: int = 0,
    calibration_folds: int = 3,
    signals: bool = True,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[str], list[float]]:
    """Each report's label and raw top probability from a model that did not see it (k folds)."""
    from sklearn.model_selection import StratifiedKFold

    pred: list[str] = [""] * len(items)
    raw: list[float] = [0.0] * len(items)
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(list(range(len(labels))), labels)
    for k, (tr, te) in enumerate(splits, start=1):
        pipe = build_pipeline(calibration_folds, seed, signals)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe.fit([items[i] for i in tr], [labels[i] for i in tr])
            proba = pipe.predict_proba([items[i] for i in te])
        classes = [str(c) for c in pipe.classes_]
        for i, row in zip(te, proba, strict=True):
            j = int(row.argmax())
            pred[i], raw[i] = classes[j], float(row[j])
        if progress:
            progress(f"held-out fold {k}/{folds} done")
    return pred, raw


def train(
    items: Sequence[Signals | str],
    labels: Sequence[str],
    *,
    folds: int = 5,
    calibration_folds: int = 3,
    seed: int = 0,
    signals: bool = True,
    sources: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainedClassifier:
    """Fit a :class:`TrainedClassifier`, measured and calibrated on ``folds`` held-out folds.

    Every label needs at least ``max(folds, calibration_folds)`` examples; drop or merge rarer labels
    first (``crm-pipeline train`` does so and says which).
    """
    import sklearn

    sig = as_signals(items)
    if len(sig) != len(labels):
        raise ValueError(f"{len(sig)} reports but {len(labels)} labels")
    counts = Counter(labels)
    if len(counts) < 2:
        raise ValueError("need at least two different labels to train")
    need = max(folds, calibration_folds)
    rare = sorted(k for k, v in counts.items() if v < need)
    if rare:
        raise ValueError(f"labels with fewer than {need} examples: {', '.join(rare)}")
    pred, raw = held_out(
        sig,
        labels,
        folds=folds,
        seed=seed,
        calibration_folds=calibration_folds,
        signals=signals,
        progress=progress,
    )
    correct = [p == g for p, g in zip(pred, labels, strict=True)]
    calibration = Calibration.fit(raw, correct, folds=folds)
    conf = [calibration(r) for r in raw]
    cv = {
        "folds": folds,
        "accuracy": round(sum(correct) / len(correct), 4),
        "macro_f1": round(macro_f1(list(labels), pred), 4),
        f"coverage_at_{QUOTED_PRECISION}": round(coverage_at_precision(conf, correct, QUOTED_PRECISION), 4),
        "reliability": [{k: round(v, 4) for k, v in b.items()} for b in reliability_table(conf, correct)],
    }
    pipeline = build_pipeline(calibration_folds, seed, signals)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.fit(sig, list(labels))
    if progress:
        progress("final model fitted on every example")
    trained_at = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # A random part: two trainings on the same rows within one second (a retrain loop, a test) are two models.
    salt = uuid.uuid4().hex
    made = repr((trained_at, sorted(counts.items()), len(sig), salt))
    digest = hashlib.sha256(made.encode()).hexdigest()[:6]
    with_hint = sum(1 for s in sig if s.category_hint)
    with_place = sum(1 for s in sig if s.region is not None and s.region.kota_code)
    meta = {
        "model_id": f"m{trained_at}-{digest}",
        "trained_at": trained_at,
        "n_examples": len(sig),
        "label_counts": dict(sorted(counts.items())),
        "with_hint": with_hint,
        "with_place": with_place,
        "channels": dict(Counter(s.channel or "-" for s in sig).most_common()),
        "signals": signals,
        "sources": sources or {},
        "sklearn_version": sklearn.__version__,
        "cv": cv,
    }
    return TrainedClassifier(pipeline, meta, calibration)


def loads_model(data: bytes, origin: str = "model") -> TrainedClassifier:
    """A model from its saved bytes (a file or a registry row); errors name ``origin``."""
    import joblib
    import sklearn

    try:
        # joblib/pickle: load only model files you or your team wrote (they can run code when loaded).
        doc = joblib.load(io.BytesIO(data))
    except Exception as exc:
        raise ModelFileError(f"{origin}: not a readable model file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{origin}: not a {MODEL_FORMAT} file")
    if doc.get("version") != MODEL_FORMAT_VERSION:
        found = doc.get("version")
        raise ModelFileError(
            f"{origin}: format version {found}; this pipeline reads {MODEL_FORMAT_VERSION} (retrain it)"
        )
    meta = doc.get("meta", {})
    if meta.get("sklearn_version") not in (None, sklearn.__version__):
        warnings.warn(
            f"{origin}: trained with scikit-learn {meta['sklearn_version']}, running {sklearn.__version__}",
            stacklevel=2,
        )
    cal = Calibration.from_dict(doc["calibration"]) if doc.get("calibration") else None
    return TrainedClassifier(doc["pipeline"], meta, cal)


def load_model(path: str | Path) -> TrainedClassifier:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    return loads_model(path.read_bytes(), str(path))


def load_classifier(model_path: str | None = None) -> Classifier:
    """The trained model at ``model_path``, or the built-in lexicon classifier."""
    return load_model(model_path) if model_path else load_lexicon_classifier()
