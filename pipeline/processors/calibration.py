"""Calibrated confidence and the routing threshold a target precision implies.

A classifier's raw score is not a probability, and a threshold on it (0.35 was a guess) says nothing
about how many auto-routed reports are right. Both are fixed here, from the classifier's decisions on
reports it did not see while it was fitted (cross-validation folds):

* :meth:`Calibration.fit` maps raw scores to the observed share of right decisions (isotonic
  regression: monotone, no assumed shape), so ``confidence`` = P(the named agency is right);
* the precision curve over those calibrated confidences gives, for a target precision (0.95 by
  default, ``CRM_ROUTE_TARGET_PRECISION``), the lowest confidence above which the decisions reached
  it: :meth:`Calibration.threshold_for`. Lower threshold, more reports dispatched without a person.

Pure and small: it travels inside a model artifact (and, for the lexicon, as a packaged JSON file).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

#: a threshold must rest on at least this many held-out decisions above it
MIN_SUPPORT = 30
#: a group gets a map of its own from this many held-out decisions; below, the global map serves it
MIN_GROUP = 40
#: shrinkage of a group's map toward the global one: weight n / (n + GROUP_PRIOR)
GROUP_PRIOR = 50
#: points kept of the precision curve (quantiles of the confidence): enough to pick a threshold
CURVE_POINTS = 200


@dataclass(frozen=True)
class Calibration:
    raw: tuple[float, ...]  # increasing knots of the raw score
    prob: tuple[float, ...]  # the probability of a right decision at each knot (non-decreasing)
    #: the precision curve: for each threshold (descending), precision and coverage of decisions above it
    thresholds: tuple[float, ...] = ()
    precision: tuple[float, ...] = ()
    coverage: tuple[float, ...] = ()
    support: tuple[int, ...] = ()
    n: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    #: per-group maps (for example per predicted category): group → (raw knots, probabilities, weight);
    #: a group's probability is blended with the global one by its weight n / (n + PRIOR)
    groups: dict[str, tuple[tuple[float, ...], tuple[float, ...], float]] = field(default_factory=dict)

    def __call__(self, raw: float, group: str | None = None) -> float:
        """The calibrated probability of a raw score (linear between knots, flat outside)."""
        p = _interp(self.raw, self.prob, raw)
        g = self.groups.get(group) if group is not None else None
        if g is None:
            return p
        xs, ys, w = g
        return w * _interp(xs, ys, raw) + (1.0 - w) * p

    def threshold_for(self, target: float, min_support: int = MIN_SUPPORT) -> float | None:
        """Lowest confidence whose decisions above it reached ``target`` precision (None: none did)."""
        best = None
        for t, p, s in zip(self.thresholds, self.precision, self.support, strict=True):
            if s >= min_support and p >= target:
                best = t  # thresholds descend: the last one that holds dispatches the most
        return best

    def coverage_at(self, threshold: float | None) -> float:
        """Share of held-out decisions at or above ``threshold``."""
        if threshold is None or not self.thresholds:
            return 0.0
        for t, c in zip(reversed(self.thresholds), reversed(self.coverage), strict=True):
            if t >= threshold:
                return c
        return 0.0

    @classmethod
    def fit(
        cls,
        raw: Sequence[float],
        correct: Sequence[bool],
        groups: Sequence[str] | None = None,
        **meta: Any,
    ) -> Calibration:
        """Isotonic map raw → P(right) (and one per group with enough decisions, shrunk toward the
        global map), then the precision curve of the calibrated confidences."""
        import numpy as np

        x = np.asarray(raw, dtype=np.float64)
        y = np.asarray(correct, dtype=np.float64)
        if len(x) == 0:
            raise ValueError("no held-out decisions to calibrate on")
        gx, gy = _isotonic(x, y)
        maps: dict[str, tuple[tuple[float, ...], tuple[float, ...], float]] = {}
        if groups is not None:
            keys = np.asarray(groups, dtype=object)
            for key in sorted(set(groups)):
                mask = keys == key
                n = int(mask.sum())
                if n >= MIN_GROUP:
                    kx, ky = _isotonic(x[mask], y[mask])
                    maps[str(key)] = (kx, ky, round(n / (n + GROUP_PRIOR), 6))
        base = cls(gx, gy, groups=maps)
        conf = np.array([base(v, g) for v, g in zip(x, groups or [None] * len(x), strict=True)])
        return cls.with_curve(base, conf, y, **meta)

    @classmethod
    def with_curve(cls, base: Calibration, conf: Any, correct: Any, **meta: Any) -> Calibration:
        import numpy as np

        conf = np.asarray(conf, dtype=np.float64)
        correct = np.asarray(correct, dtype=np.float64)
        order = np.argsort(-conf, kind="stable")
        c, ok = conf[order], correct[order]
        hits = np.cumsum(ok)
        n = len(c)
        # one point per distinct confidence (the last position holding it), thinned to CURVE_POINTS
        last = np.r_[np.nonzero(np.diff(c))[0], n - 1]
        if len(last) > CURVE_POINTS:
            last = last[np.unique(np.linspace(0, len(last) - 1, CURVE_POINTS).round().astype(int))]
        thresholds = tuple(round(float(c[i]), 6) for i in last)
        precision = tuple(round(float(hits[i] / (i + 1)), 6) for i in last)
        coverage = tuple(round(float((i + 1) / n), 6) for i in last)
        support = tuple(int(i + 1) for i in last)
        return cls(base.raw, base.prob, thresholds, precision, coverage, support, n, dict(meta), base.groups)

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw": list(self.raw),
            "prob": list(self.prob),
            "thresholds": list(self.thresholds),
            "precision": list(self.precision),
            "coverage": list(self.coverage),
            "support": list(self.support),
            "n": self.n,
            "meta": self.meta,
            "groups": {
                k: {"raw": list(x), "prob": list(y), "weight": w} for k, (x, y, w) in self.groups.items()
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        raw, prob = tuple(map(float, d["raw"])), tuple(map(float, d["prob"]))
        if len(raw) != len(prob) or any(b < a for a, b in pairwise(raw)):
            raise ValueError("calibration knots must be increasing and paired")
        curve = [tuple(d.get(k, ())) for k in ("thresholds", "precision", "coverage", "support")]
        if len({len(c) for c in curve}) != 1:
            raise ValueError("calibration curve columns differ in length")
        return cls(
            raw,
            prob,
            tuple(map(float, curve[0])),
            tuple(map(float, curve[1])),
            tuple(map(float, curve[2])),
            tuple(map(int, curve[3])),
            int(d.get("n", 0)),
            dict(d.get("meta", {})),
            {
                str(k): (tuple(map(float, g["raw"])), tuple(map(float, g["prob"])), float(g["weight"]))
                for k, g in (d.get("groups") or {}).items()
            },
        )


def _interp(xs: tuple[float, ...], ys: tuple[float, ...], x: float) -> float:
    if not xs:
        return x
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1


def _isotonic(x: Any, y: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Centred isotonic regression: the pool-adjacent-violators blocks, each as one knot at its middle,
    joined by straight lines. Plain isotonic regression is flat inside a block, so reports the model
    ranked apart would tie, and a threshold could only dispatch a whole block or none of it (on the
    real CRM reports that cost a tenth of the dispatchable share); between block centres the ranking
    survives and the probabilities are the same."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True).fit(x, y)
    xs = [float(v) for v in iso.X_thresholds_]
    ys = [float(v) for v in iso.y_thresholds_]
    knots_x: list[float] = []
    knots_y: list[float] = []
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and ys[j + 1] == ys[i]:
            j += 1
        knots_x.append((xs[i] + xs[j]) / 2.0)
        knots_y.append(ys[i])
        i = j + 1
    if len(knots_x) > 1:  # the ends stay where the data ends, so the extremes keep their probability
        knots_x[0], knots_x[-1] = xs[0], xs[-1]
    return tuple(knots_x), tuple(knots_y)


def reliability_table(
    conf: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> list[dict[str, float]]:
    """Confidence deciles (equal-count bins) with the stated and the observed accuracy of each."""
    pairs = sorted(zip(conf, correct, strict=True))
    n = len(pairs)
    out = []
    for b in range(bins):
        part = pairs[b * n // bins : (b + 1) * n // bins]
        if not part:
            continue
        stated = sum(c for c, _ in part) / len(part)
        observed = sum(1 for _, ok in part if ok) / len(part)
        out.append(
            {
                "bin": b + 1,
                "n": len(part),
                "low": part[0][0],
                "high": part[-1][0],
                "stated": stated,
                "observed": observed,
                "gap": observed - stated,
            }
        )
    return out


def coverage_at_precision(conf: Sequence[float], correct: Sequence[bool], target: float) -> float:
    """Largest share of decisions, taken most confident first, whose precision is at least ``target``."""
    pairs = sorted(zip(conf, correct, strict=True), key=lambda p: -p[0])
    hits = best = 0
    for i, (_, ok) in enumerate(pairs, start=1):
        hits += bool(ok)
        if hits / i >= target:
            best = i
    return best / len(pairs) if pairs else 0.0
