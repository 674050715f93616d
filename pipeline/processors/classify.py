"""Classification of reports into project categories (or handling agencies), with calibrated confidence.

Contract every classifier keeps: ``classify(items)`` takes a batch of :class:`Signals` (the normalised
text, see :func:`pipeline.processors.normalise.normalise`, plus what else is known about the report:
the category the citizen picked, the channel, the located region) and returns one
:class:`Classification` per item, in order. Batches, because vectorising a batch is where speed is.
``confidence`` is the probability that the label, once routed, names the right agency: calibrated on
reports the classifier did not see (:mod:`pipeline.processors.calibration`); ``threshold_for(p)`` is
the confidence above which its decisions reached precision ``p``, so the router dispatches by a target
precision rather than a guessed score. Plain strings are accepted for text-only callers.

* :class:`LexiconClassifier` — the default, shipped with the project, needs no training: a weighted
  keyword lexicon (``pipeline/data/lexicon.v1.json``, ops-editable) over the words, their root forms
  (``menumpuk`` → ``tumpuk``, from the affixed forms of every lexicon word) and the phrases of the text,
  plus the citizen's category hint (a JAKI/CRM category the routing table lists under a project
  category). Its raw score is calibrated by a packaged table fitted on real CRM reports
  (``lexicon.v1.calibration.json``, numbers only: ``bench/calibrate_lexicon.py`` rebuilds it).
* :class:`~pipeline.processors.trained.TrainedClassifier` — scikit-learn, trained on a city's own
  history (text, hint, channel and place); see :mod:`pipeline.processors.trained`.

:func:`~pipeline.processors.trained.load_classifier` returns a trained model from a file, else the
lexicon classifier.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .calibration import Calibration
from .normalise import affixed_forms, root_words

if TYPE_CHECKING:
    from ..envelope import Region

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
LEXICON_PATH = DATA_DIR / "lexicon.v1.json"
LEXICON_CALIBRATION = DATA_DIR / "lexicon.v1.calibration.json"
ROUTING_TABLE = DATA_DIR / "routing_table.v1.csv"

#: lexicon points the citizen's own category choice adds (3 named the right agency most often on real CRM
#: reports: 2 and 4 both did worse; a strong keyword is worth 2-3)
HINT_WEIGHT = 3.0


@dataclass(frozen=True, slots=True)
class Signals:
    """What a classifier may read about one report."""

    text: str  # normalised
    category_hint: str | None = None
    channel: str | None = None
    region: Region | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    category: str | None
    confidence: float
    #: the best labels with their probabilities, most likely first (the decision's own label included)
    candidates: tuple[tuple[str, float], ...] = ()


class Classifier(Protocol):
    name: str

    def classify(self, items: Sequence[Signals | str]) -> list[Classification]: ...

    def threshold_for(self, precision: float) -> float | None: ...


class ModelFileError(ValueError):
    """A model file is missing, unreadable or of another format/version; the message names the file."""


def as_signals(items: Sequence[Signals | str]) -> list[Signals]:
    return [i if isinstance(i, Signals) else Signals(i) for i in items]


def hint_key(label: str | None) -> str:
    """A category label as people type it ("Parkir liar ", "Saluran Air, Kali/Sungai") → a stable key."""
    return re.sub(r"[^a-z0-9]+", " ", (label or "").lower()).strip()


class HintMap:
    """CRM/JAKI category labels → project categories, from the routing table's ``crm_categories``.

    An exact label wins; else the longest listed label found as whole words inside the hint
    ("Pekerja Penanganan ... Kelurahan (PPSU)" → ``ppsu``), so the picker's longer names still count.
    """

    def __init__(self, labels: Mapping[str, str]) -> None:
        self._exact = {hint_key(k): v for k, v in labels.items() if hint_key(k)}
        self._by_length = sorted(self._exact.items(), key=lambda kv: -len(kv[0]))
        self._cache: dict[str, str | None] = {}

    def __call__(self, hint: str | None) -> str | None:
        if not hint:
            return None
        if hint in self._cache:  # the picker has a hundred labels: nearly every hint is a cache hit
            return self._cache[hint]
        key = hint_key(hint)
        found = self._exact.get(key)
        if found is None:
            padded = f" {key} "
            for label, cat in self._by_length:
                if f" {label} " in padded:
                    found = cat
                    break
        if len(self._cache) < 10_000:
            self._cache[hint] = found
        return found


def read_hint_map(routing_table: str | Path = ROUTING_TABLE) -> HintMap:
    import csv

    labels: dict[str, str] = {}
    with Path(routing_table).open(encoding="utf-8") as fh:
        rows = csv.DictReader(line for line in fh if line.strip() and not line.lstrip().startswith("#"))
        for row in rows:
            for label in (row.get("crm_categories") or "").split(";"):
                if label.strip():
                    labels.setdefault(label.strip(), row["category"].strip())
    return HintMap(labels)


# --- lexicon ------------------------------------------------------------------------------------------


class LexiconClassifier:
    """Weighted keyword lexicon over words, stems and phrases; needs no training."""

    name = "lexicon-v1"

    def __init__(
        self,
        lexicon: dict[str, dict[str, float]],
        name: str | None = None,
        *,
        hints: HintMap | None = None,
        calibration: Calibration | None = None,
    ) -> None:
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
        self.hints = hints
        self._hint_index = {c: i for i, c in enumerate(self.categories)}
        #: raw score → P(right agency); None: the raw score stands (a custom lexicon without a table)
        self.calibration = calibration

    def threshold_for(self, precision: float) -> float | None:
        return self.calibration.threshold_for(precision) if self.calibration else None

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

    def classify(self, items: Sequence[Signals | str]) -> list[Classification]:
        out: list[Classification] = []
        index, categories, hints, cal = self._index, self.categories, self.hints, self.calibration
        for item in items:
            text, hint = (item, None) if isinstance(item, str) else (item.text, item.category_hint)
            scores: dict[int, float] = {}
            for term in self._matched_terms(text):
                for ci, w in index[term]:
                    scores[ci] = scores.get(ci, 0.0) + w
            hinted = hints(hint) if hint and hints is not None else None
            if hinted is not None:
                if hinted in self._hint_index:
                    ci = self._hint_index[hinted]
                    scores[ci] = scores.get(ci, 0.0) + HINT_WEIGHT
            if not scores:
                out.append(Classification(None, 0.0))
                continue
            # highest score wins; ties go to the category first in alphabetical order
            ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
            best, top = ranked[0]
            second = ranked[1][1] if len(ranked) > 1 else 0.0
            if top <= 0:
                out.append(Classification(None, 0.0))
                continue
            raw = self.confidence(top, second)
            conf = round(cal(raw, calibration_group(categories[best], hinted)), 4) if cal is not None else raw
            # the rest of the probability shared by score among the runners-up
            rest = sum(sc for _, sc in ranked[1:3] if sc > 0)
            cands = [(categories[best], conf)]
            cands += [(categories[ci], round((1 - conf) * sc / rest, 4)) for ci, sc in ranked[1:3] if sc > 0]
            out.append(Classification(categories[best], conf, tuple(cands)))
        return out


def calibration_group(category: str, hinted: str | None) -> str:
    """How much to trust a lexicon decision depends on its category and on whether the citizen's own
    category choice agrees: the calibration keeps one map per such group."""
    return f"{category}|{'no-hint' if hinted is None else 'hint' if hinted == category else 'other-hint'}"


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


def read_calibration(path: str | Path = LEXICON_CALIBRATION) -> Calibration:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != "crm-triage-calibration" or doc.get("version") != 1:
            raise ValueError("not a version-1 crm-triage-calibration file")
        return Calibration.from_dict(doc["calibration"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: cannot read the calibration: {exc}") from None


@lru_cache(maxsize=4)
def load_lexicon_classifier(path: str | None = None, calibrated: bool = True) -> LexiconClassifier:
    """The packaged lexicon with the routing table's category hints and, for the packaged lexicon, its
    calibration (a custom lexicon has none until ``bench/calibrate_lexicon.py`` fits one)."""
    cal = None
    if calibrated and path is None and LEXICON_CALIBRATION.exists():
        cal = read_calibration(LEXICON_CALIBRATION)
    return LexiconClassifier(read_lexicon(path or LEXICON_PATH), hints=read_hint_map(), calibration=cal)
