"""Location: resolve a report to kota, kecamatan and kelurahan (Kemendagri codes) and say how.

Evidence, strongest first:

1. **coordinates** (JAKI): point-in-polygon over the 267 kelurahan boundaries (shapely ``STRtree``). The
   shapes are simplified, so a point in no polygon takes the nearest kelurahan within
   :data:`NEAREST_MAX_METRES`; farther than that the point is treated as outside Jakarta.
2. **desk office** (walk-in reports): a Kemendagri code (``31.72.04.1004`` or ``3172041004``, any level)
   or an office name ("Kantor Kelurahan Kali Baru", "Kecamatan Cilincing", "Walikota Jakarta Utara").
3. **the address**, then **the report text**: kelurahan/kecamatan/kota names, with or without the
   ``kel.``/``kelurahan``/``kec.``/``kecamatan`` prefixes. Names are compared without spaces, so
   "Kali Baru"/"Kalibaru" and "Kramat Jati"/"Kramatjati" are the same; common abbreviations are
   expanded (``kp`` → kampung, ``tj`` → tanjung, ``jaksel`` → Jakarta Selatan); a misspelt name after a
   prefix is matched fuzzily. Names that are ordinary words ("Baru", "Tengah", "Gunung", "Jati") count
   only after a prefix; a longer name wins over its prefix ("Menteng Dalam" in Jakarta Selatan over
   "Menteng" in Jakarta Pusat, even as "menteng dlm"); a name after ``jalan``/``gang`` is weak evidence.

Reference data (vendored, MIT; see ``pipeline/data/NOTICE.md``): ``jakarta_wilayah_gazetteer.csv`` and
``jakarta_kelurahan_boundaries.geojson``.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..envelope import Location, Region

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
GAZETTEER_CSV = DATA_DIR / "jakarta_wilayah_gazetteer.csv"
BOUNDARIES_GEOJSON = DATA_DIR / "jakarta_kelurahan_boundaries.geojson"

#: A point in no (simplified) polygon takes the nearest kelurahan up to this distance.
NEAREST_MAX_METRES = 1000.0
#: side of the grid cells whose answer :meth:`Gazetteer.by_point` remembers when one kelurahan holds
#: the whole cell (most of a kelurahan of 1-3 km²; cells on a boundary are looked up point by point)
POINT_CELL_METRES = 100.0
_POINT_CELLS_MAX = 100_000  # about 70,000 cells of 100 m cover the province: a bound, never reached there

# Local equirectangular projection around Jakarta: metres per degree.
_LAT0 = -6.2
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(_LAT0))

_KEL_MARKERS = frozenset({"kel", "kelurahan", "kelurhan", "kelurahn", "klurahan", "lurah", "desa"})
_KEC_MARKERS = frozenset({"kec", "kecamatan", "kecamtan", "kecamatn", "camat"})
_KOTA_MARKERS = frozenset({"kota", "walikota", "wali", "kodya", "kabupaten", "kab", "pemkot", "sudin"})
_STREET_MARKERS = frozenset(
    {"jalan", "jl", "jln", "jlan", "gang", "gg", "lorong", "komplek", "komp", "perum"}
)
_STREET_AFTER = frozenset({"raya"})
#: Abbreviations and spelling variants folded before matching (applied to text and names alike).
_TOKEN_ALIASES = {
    "kp": "kampung",
    "kamp": "kampung",
    "kpg": "kampung",
    "tj": "tanjung",
    "tg": "tanjung",
    "tanjong": "tanjung",
    "psr": "pasar",
    "pd": "pondok",
    "pdk": "pondok",
    "kebun": "kebon",
    "kb": "kebon",
    "jkt": "jakarta",
    "dki": "jakarta",
    "utr": "utara",
    "ut": "utara",
    "sel": "selatan",
    "sltn": "selatan",
    "slt": "selatan",
    "tim": "timur",
    "tmr": "timur",
    "brt": "barat",
    "bar": "barat",
    "pst": "pusat",
    "kby": "kebayoran",
    "kebay": "kebayoran",
    "pulogadung": "pulo gadung",
    "dlm": "dalam",
}
_KOTA_SHORTHANDS = {
    "jakpus": "jakarta pusat",
    "jakut": "jakarta utara",
    "jakbar": "jakarta barat",
    "jaksel": "jakarta selatan",
    "jaktim": "jakarta timur",
    "jaktimur": "jakarta timur",
    "kepulauanseribu": "kepulauan seribu",
    "pulauseribu": "kepulauan seribu",
}
_WORD = re.compile(r"[a-z0-9]+")
_CODE = re.compile(r"^\s*(31)[.\s]?(\d{2})(?:[.\s]?(\d{2})(?:[.\s]?(\d{4}))?)?\s*$")


@dataclass(frozen=True, slots=True)
class Place:
    level: str  # "kota" | "kecamatan" | "kelurahan"
    code: str
    name: str
    kota: str
    kota_code: str
    kecamatan: str | None = None
    kecamatan_code: str | None = None
    kelurahan: str | None = None
    kelurahan_code: str | None = None
    lat: float | None = None
    lon: float | None = None
    #: built on first use and shared by every report placed here (``Region`` is frozen)
    _region: Region | None = field(default=None, init=False, repr=False, compare=False)

    def region(self) -> Region:
        if self._region is None:
            region = Region(
                kota=self.kota,
                kota_code=self.kota_code,
                kecamatan=self.kecamatan,
                kecamatan_code=self.kecamatan_code,
                kelurahan=self.kelurahan,
                kelurahan_code=self.kelurahan_code,
            )
            object.__setattr__(self, "_region", region)  # a cache, not state: the place stays frozen
        return self._region  # type: ignore[return-value]

    def describe(self) -> str:
        return f"{self.level} {self.name} ({self.code})"


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for tok in _WORD.findall(text.lower()):
        tok = _TOKEN_ALIASES.get(tok, tok)
        out.extend(tok.split())
    return out


def _key(name: str) -> str:
    return "".join(_tokens(name))


@dataclass
class _Mention:
    start: int
    end: int
    key: str
    places: list[Place]
    weight: float
    marker: str | None
    fuzzy: bool = False


def _cell_key(cx: int, cy: int) -> int:
    """One int for a grid cell (a dict of int keys is half the memory of one of tuples)."""
    return (cx << 24) ^ (cy & 0xFFFFFF)


@dataclass
class Gazetteer:
    """Kota, kecamatan and kelurahan of DKI Jakarta with their boundaries; see :meth:`locate`."""

    places: list[Place]
    polygons: dict[str, object] = field(default_factory=dict)  # kelurahan code → projected shapely geometry
    common_words: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.by_code: dict[str, Place] = {p.code: p for p in self.places}
        self._by_key: dict[str, list[Place]] = defaultdict(list)
        for p in self.places:
            if p.level == "kota":
                short = re.sub(r"^(kota|kabupaten) administrasi ", "", p.name.lower())
                self._by_key[_key(short)].append(p)
            else:
                self._by_key[_key(p.name)].append(p)
        for shorthand, full in _KOTA_SHORTHANDS.items():
            self._by_key[shorthand].extend(self._by_key[_key(full)])
        self._max_span = max(len(_tokens(p.name)) for p in self.places)
        self._keys_by_level: dict[str, list[str]] = defaultdict(list)
        for key, places in self._by_key.items():
            for level in {p.level for p in places}:
                self._keys_by_level[level].append(key)
        #: names that begin another, longer name ("menteng" → "mentengdalam", "mentengatas")
        self._extensions: dict[str, list[str]] = defaultdict(list)
        for key in self._by_key:
            for other in self._by_key:
                if other != key and other.startswith(key):
                    self._extensions[key].append(other)
        self._text_cache: dict[str, tuple[Place | None, str]] = {}
        #: grid cell (:func:`_cell_key`) → the kelurahan code that holds the whole cell, or "" (by_point)
        self._cells: dict[int, str] = {}
        self._tree = None
        self._tree_codes: list[str] = []
        if self.polygons:
            from shapely import STRtree

            self._tree_codes = list(self.polygons)
            self._tree = STRtree([self.polygons[c] for c in self._tree_codes])

    # --- public ------------------------------------------------------------------------------------

    def kota_codes(self) -> list[str]:
        return sorted(p.code for p in self.places if p.level == "kota")

    def locate(self, location: Location, text: str) -> tuple[Region | None, str]:
        """The report's region and a sentence saying which evidence decided it."""
        notes: list[str] = []
        if location.lat is not None and location.lon is not None:
            place, why = self.by_point(location.lat, location.lon)
            if place is not None:
                return place.region(), why
            notes.append(why)
        if location.desk_office:
            place, why = self.by_desk_office(location.desk_office)
            if place is not None:
                return place.region(), why
            notes.append(why)
        for source, value in (("address", location.address), ("text", text)):
            if value:
                place, why = self.by_text(value)
                if place is not None:
                    return place.region(), f"{source}: {why}"
        notes.append("no coordinates, desk office or place name in the address or text")
        return None, "; ".join(notes)

    def by_point(self, lat: float, lon: float) -> tuple[Place | None, str]:
        if self._tree is None:
            return None, "coordinates given but no boundaries loaded"
        x, y = lon * _M_PER_DEG_LON, lat * _M_PER_DEG_LAT
        # A point in a cell that lies wholly in one kelurahan and touches no other has that answer:
        # one dict lookup instead of a tree query and a containment test (the same result; a test
        # compares them over the province).
        cx, cy = math.floor(x / POINT_CELL_METRES), math.floor(y / POINT_CELL_METRES)
        whole = self._cells.get(_cell_key(cx, cy))
        if whole is None:
            whole = self._whole_cell(cx, cy)
        if whole:
            place = self.by_code[whole]
            return place, f"coordinates {lat:.5f},{lon:.5f} inside kelurahan {place.name} ({whole})"
        return self.by_point_exactly(lat, lon)

    def by_point_exactly(self, lat: float, lon: float) -> tuple[Place | None, str]:
        """:meth:`by_point` without the grid cells: the tree query and containment test every time."""
        if self._tree is None:
            return None, "coordinates given but no boundaries loaded"
        from shapely import Point

        pt = Point(lon * _M_PER_DEG_LON, lat * _M_PER_DEG_LAT)
        where = f"coordinates {lat:.5f},{lon:.5f}"
        hits = [self._tree_codes[i] for i in self._tree.query(pt, predicate="intersects")]
        if hits:
            # On a shared edge both polygons intersect: take the one whose interior is closest.
            code = min(hits, key=lambda c: (not self.polygons[c].contains(pt), c))  # type: ignore[attr-defined]
            place = self.by_code[code]
            return place, f"{where} inside kelurahan {place.name} ({code})"
        idx, dist = self._tree.query_nearest(pt, max_distance=NEAREST_MAX_METRES, return_distance=True)
        if len(idx):
            code = self._tree_codes[int(idx[0])]
            place = self.by_code[code]
            return place, f"{where} {dist[0]:.0f} m outside kelurahan {place.name} ({code}), the nearest"
        return None, f"{where} more than {NEAREST_MAX_METRES:.0f} m from every Jakarta kelurahan"

    def _whole_cell(self, cx: int, cy: int) -> str:
        """The kelurahan that holds the whole grid cell and touches no other, or "" (remembered)."""
        from shapely import box

        assert self._tree is not None
        size, margin = POINT_CELL_METRES, 0.01  # a centimetre more a side: rounding in x / size
        area = box(cx * size - margin, cy * size - margin, (cx + 1) * size + margin, (cy + 1) * size + margin)
        hits = self._tree.query(area, predicate="intersects")
        code = ""
        if len(hits) == 1 and self.polygons[self._tree_codes[int(hits[0])]].contains(area):  # type: ignore[attr-defined]
            code = self._tree_codes[int(hits[0])]
        if len(self._cells) >= _POINT_CELLS_MAX:
            self._cells.clear()
        self._cells[_cell_key(cx, cy)] = code
        return code

    def by_desk_office(self, desk: str) -> tuple[Place | None, str]:
        m = _CODE.match(desk)
        if m:
            code = ".".join(g for g in m.groups() if g)
            place = self.by_code.get(code)
            if place is not None:
                return place, f"desk office code {code}: {place.describe()}"
            return None, f"desk office code {desk.strip()!r} is not in the gazetteer"
        place, why = self.by_text(desk)
        if place is not None:
            return place, f"desk office {desk.strip()!r}: {why}"
        return None, f"desk office {desk.strip()!r} names no kota, kecamatan or kelurahan"

    def by_text(self, text: str) -> tuple[Place | None, str]:
        """The place a text names, and how it was decided. Short texts (addresses) are cached."""
        if len(text) > 200:
            return self._by_text(text)
        hit = self._text_cache.get(text)
        if hit is None:
            if len(self._text_cache) > 50_000:
                self._text_cache.clear()
            hit = self._text_cache[text] = self._by_text(text)
        return hit

    def _by_text(self, text: str) -> tuple[Place | None, str]:
        tokens = _tokens(text)
        mentions = self._mentions(tokens)
        if not mentions:
            return None, "no place name"
        return self._decide(mentions)

    # --- matching ----------------------------------------------------------------------------------

    def _mentions(self, tokens: list[str]) -> list[_Mention]:
        found: list[_Mention] = []
        i, n = 0, len(tokens)
        while i < n:
            marker = self._marker_before(tokens, i)
            best: _Mention | None = None
            for span in range(min(self._max_span + 1, n - i), 0, -1):
                key = "".join(tokens[i : i + span])
                places = self._by_key.get(key)
                if places:
                    best = self._mention(tokens, i, i + span, key, places, marker)
                    break
            if best is not None and best.end < n and best.key in self._extensions:
                # "menteng dlm" / "kramat jt": a longer name, misspelt, beats the shorter one it starts with
                longer = self._extend(tokens, best)
                if longer is not None:
                    best = longer
            if best is None and marker in ("kelurahan", "kecamatan"):
                best = self._fuzzy(tokens, i, i + 1, marker)
            if best is not None:
                if best.weight > 0:
                    found.append(best)
                i = best.end
            else:
                i += 1
        return found

    def _marker_before(self, tokens: list[str], i: int) -> str | None:
        if i == 0:
            return None
        prev = tokens[i - 1]
        if prev in _KEL_MARKERS:
            return "kelurahan"
        if prev in _KEC_MARKERS:
            return "kecamatan"
        if prev in _KOTA_MARKERS or (prev == "administrasi" and i >= 2):
            return "kota"
        if prev in _STREET_MARKERS:
            return "street"
        return None

    def _mention(
        self, tokens: list[str], start: int, end: int, key: str, places: list[Place], marker: str | None
    ) -> _Mention:
        span = tokens[start:end]
        if marker in ("kelurahan", "kecamatan", "kota"):
            matching = [p for p in places if p.level == marker]
            if matching:
                return _Mention(start, end, key, matching, 3.0, marker)
        common = all(t in self.common_words for t in span)
        if marker == "street" or (end < len(tokens) and tokens[end] in _STREET_AFTER):
            weight = 0.3  # "jl. kalibata raya": the street is named after the area, weak evidence
        elif (common and (len(span) == 1 or len(_tokens(places[0].name)) == 1)) or key in self.common_words:
            # "baru", "tengah", "jati", "kali baru" (as in "3 kali baru diperbaiki"): only counts when
            # its kecamatan is named too
            weight = 0.1
        elif common:
            weight = 0.5  # "pasar minggu", "rawa buaya": plausible but could be ordinary words
        else:
            weight = 1.0
        return _Mention(start, end, key, places, weight, marker)

    def _fuzzy(self, tokens: list[str], start: int, min_end: int, marker: str) -> _Mention | None:
        """Close spelling match of tokens[start:end] against the names of the ``marker`` level."""
        levels = [marker]
        keys = self._keys_by_level[marker]
        best: tuple[float, int, str] | None = None
        for end in range(min_end, min(len(tokens), start + self._max_span) + 1):
            cand = "".join(tokens[start:end])
            if len(cand) < 5:
                continue
            for key in difflib.get_close_matches(cand, keys, n=1, cutoff=0.85):
                score = difflib.SequenceMatcher(None, cand, key).ratio()
                if best is None or score > best[0]:
                    best = (score, end, key)
        if best is None:
            return None
        _, end, key = best
        places = [p for p in self._by_key[key] if p.level in levels]
        return _Mention(start, end, key, places, 2.0, marker, fuzzy=True)

    def _extend(self, tokens: list[str], mention: _Mention) -> _Mention | None:
        best: tuple[float, int, str] | None = None
        for end in range(mention.end + 1, min(len(tokens), mention.end + 2) + 1):
            cand = "".join(tokens[mention.start : end])
            for key in self._extensions[mention.key]:
                score = difflib.SequenceMatcher(None, cand, key).ratio()
                if score >= 0.85 and (best is None or score > best[0]):
                    best = (score, end, key)
        if best is None:
            return None
        _, end, key = best
        weight = max(mention.weight, 0.8) if mention.weight > 0 else 0.0
        return _Mention(mention.start, end, key, list(self._by_key[key]), weight, mention.marker, fuzzy=True)

    def _decide(self, mentions: list[_Mention]) -> tuple[Place | None, str]:
        scores: dict[str, float] = defaultdict(float)
        said: dict[str, str] = {}
        for m in mentions:
            for p in m.places:
                scores[p.code] += m.weight
                label = " ".join([m.marker or "", m.key]).strip() + (" (fuzzy)" if m.fuzzy else "")
                said.setdefault(p.code, label)
        # Support from the places above: a kelurahan named together with its kecamatan or kota.
        support: dict[str, float] = {}
        for code in scores:
            place = self.by_code[code]
            support[code] = (
                scores[code]
                + 0.5 * scores.get(place.kecamatan_code or "", 0.0) * (place.kecamatan_code != code)
                + 0.25 * scores.get(place.kota_code, 0.0) * (place.kota_code != code)
            )

        def pick(level: str) -> tuple[Place | None, str]:
            cands = sorted(
                (c for c in support if self.by_code[c].level == level and support[c] >= 0.5),
                key=lambda c: -support[c],
            )
            if not cands:
                return None, ""
            top = cands[0]
            tied = [c for c in cands if support[c] == support[top]]
            if len(tied) > 1:
                return None, "ambiguous: " + ", ".join(self.by_code[c].describe() for c in tied)
            return self.by_code[top], f"named {said.get(top, '?')!r} → {self.by_code[top].describe()}"

        kel, why_kel = pick("kelurahan")
        kec, why_kec = pick("kecamatan")
        if kel is not None:
            same_name_kec = [
                c for c in scores if self.by_code[c].level == "kecamatan" and self.by_code[c].name == kel.name
            ]
            # "Tambora" alone names a kecamatan and its kelurahan: only the kecamatan is certain.
            if same_name_kec and scores[kel.code] <= scores[same_name_kec[0]] and kec is not None:
                return kec, f"{why_kec} (the same name is also one of its kelurahan; kelurahan not certain)"
            return kel, why_kel
        if kec is not None:
            return kec, why_kec + (f"; {why_kel}" if why_kel else "")
        kota, why_kota = pick("kota")
        if kota is not None:
            return kota, why_kota
        reasons = [w for w in (why_kel, why_kec, why_kota) if w]
        return None, "; ".join(reasons) or "place names too weak to decide"


def _project(geom):  # type: ignore[no-untyped-def]
    import numpy as np
    from shapely import transform

    return transform(geom, lambda xy: xy * np.array([_M_PER_DEG_LON, _M_PER_DEG_LAT]))


def _common_words() -> frozenset[str]:
    try:
        from .normalise import _root_words

        words = set(_root_words())
    except Exception:  # pragma: no cover
        words = set()
    # Words the dictionary lacks but a complaint uses every day, and the pieces of names that are words.
    words.update({"kali", "baru", "pulo", "pulau", "rawa", "kebon", "kampung", "pasar", "tanah", "jati"})
    return frozenset(words)


def load_gazetteer(
    gazetteer_csv: str | Path | None = None, boundaries: str | Path | None = None
) -> Gazetteer:
    """The Jakarta gazetteer with kelurahan boundaries (packaged data unless paths are given)."""
    return _load(str(gazetteer_csv or GAZETTEER_CSV), str(boundaries or BOUNDARIES_GEOJSON))


@lru_cache(maxsize=4)
def _load(gazetteer_csv: str, boundaries: str) -> Gazetteer:
    rows = list(csv.DictReader(open(gazetteer_csv, encoding="utf-8", newline="")))
    by_code = {r["kode_kemendagri"]: r for r in rows}
    places: list[Place] = []
    for line, r in enumerate(rows, start=2):
        level = r["level"]
        if level == "provinsi":
            continue
        level = "kota" if level == "kota_kabupaten" else level
        if level not in ("kota", "kecamatan", "kelurahan"):
            raise ValueError(f"{gazetteer_csv}:{line}: unknown level {r['level']!r}")
        code = r["kode_kemendagri"]
        kota_code = ".".join(code.split(".")[:2])
        kec_code = ".".join(code.split(".")[:3]) if level != "kota" else None
        try:
            kota_name = by_code[kota_code]["nama"]
            kec_name = by_code[kec_code]["nama"] if kec_code else None
        except KeyError as exc:
            raise ValueError(f"{gazetteer_csv}:{line}: parent {exc} of {code} missing") from None
        places.append(
            Place(
                level=level,
                code=code,
                name=r["nama"],
                kota=kota_name,
                kota_code=kota_code,
                kecamatan=kec_name,
                kecamatan_code=kec_code,
                kelurahan=r["nama"] if level == "kelurahan" else None,
                kelurahan_code=code if level == "kelurahan" else None,
                lat=float(r["centroid_lat"]) if r["centroid_lat"] else None,
                lon=float(r["centroid_lng"]) if r["centroid_lng"] else None,
            )
        )
    polygons: dict[str, object] = {}
    if Path(boundaries).exists():
        from shapely.geometry import shape

        with open(boundaries, encoding="utf-8") as fh:
            features = json.load(fh)["features"]
        for feature in features:
            code = feature["properties"]["kode_kemendagri"]
            polygons[code] = _project(shape(feature["geometry"]))
    return Gazetteer(places, polygons, _common_words())
