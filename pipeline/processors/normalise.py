"""Text normalisation and personal-data masking for citizen reports (informal Indonesian).

Three functions, all pure:

* :func:`clean` — what a person should read: HTML entities and tags resolved, runs of one character
  shortened (``liaaaarr`` → ``liaarr``, ``!!!!`` → ``!!``), whitespace collapsed. Case is kept.
* :func:`mask_pii` — what routed topics may carry of the citizen's own text: :func:`clean` with phone
  numbers (``+62 812-3456-7890``, ``0812 3456 7890``, ``(021) 555 1234``), e-mail addresses and
  16-digit NIK/KK numbers replaced by ``[telepon]``, ``[email]``, ``[nik]``. The original text stays on
  the internal topics only.
* :func:`normalise` — what the classifiers and the case grouper see: masked, lower-cased, punctuation
  dropped, reduplication folded (``tiang2`` → ``tiang``), elongated words restored (``parkirrr`` →
  ``parkir``), Jakarta ``-in`` verbs mapped to ``-kan`` (``dibersihin`` → ``dibersihkan``) and informal
  words expanded: the CRM's own abbreviations (:data:`CRM_ABBREVIATIONS`: tl → tindak lanjut, pju →
  penerangan jalan umum, pkl → pedagang kaki lima, gg → gang, …) take precedence over the general slang
  table of the indoNLP package (MIT; ``yg`` → yang, ``blm`` → belum, …).

:func:`stem` (PySastrawi, cached per word) is exported for the lexicon classifier.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

_WS = re.compile(r"\s+")
_REPEAT = re.compile(r"([^\W\d_]|[^\w\s])\1{2,}")  # letters and punctuation, never digits
_TAG = re.compile(r"<(?:[a-zA-Z/!][^<>]{0,200})>")
_URL = re.compile(r"(?i)\b(?:https?://|www\.)\S+")

# --- personal data -------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?i)(?<![\w.+-])[a-z0-9][a-z0-9._%+-]*@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b")
# NIK / KK: 16 digits, contiguous or in groups of 4-4-4-4 or 6-6-4.
_NIK = re.compile(r"(?<![\d+])(?:\d{16}|\d{4}[ .-]\d{4}[ .-]\d{4}[ .-]\d{4}|\d{6}[ .-]\d{6}[ .-]\d{4})(?!\d)")
# Phone numbers: an Indonesian prefix (+62, 62, 0) then a mobile (8xx) or area code, then digit groups.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\s?62|62|\(0\d{1,3}\)|0)[\s.-]?\(?\d{1,4}\)?(?:[\s.-]?\d{2,5}){1,4}(?!\d)"
)


_DIGIT_RUN = re.compile(r"\d{3}")  # cheap pre-check: no three digits in a row, no number to mask


def _phone_sub(match: re.Match[str]) -> str:
    raw = match.group(0)
    digits = re.sub(r"\D", "", raw)
    if digits.startswith("62"):
        national = digits[2:]
    elif digits.startswith("0"):
        national = digits[1:]
    else:
        return raw
    # Mobile numbers are 8xx with 9-12 national digits; landlines are an area code + 5-8 digits.
    if national.startswith("8") and 9 <= len(national) <= 12:
        return "[telepon]"
    if not national.startswith("8") and 8 <= len(national) <= 11 and ("(" in raw or raw[:1] in "0+6"):
        # a landline such as 021-555-1234 / (021) 5551234 / +62 21 5551234; plain numbers like
        # "2.000.000" never start with 0 or 62 and are left alone.
        if re.match(r"^\(?(?:\+\s?62|62|0)", raw):
            return "[telepon]"
    return raw


def mask_pii(text: str) -> str:
    """The citizen's text as routed topics may carry it: cleaned, with contact details and NIK masked."""
    text = clean(text)
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    if _DIGIT_RUN.search(text):
        text = _NIK.sub("[nik]", text)
        text = _PHONE.sub(_phone_sub, text)
    return text


# --- cleaning ------------------------------------------------------------------------------------


def clean(text: str) -> str:
    """HTML entities and tags, runs of the same character (``bangeeeet`` → ``bangeet``) and whitespace."""
    if "&" in text:
        text = html.unescape(html.unescape(text))  # CRM exports are sometimes escaped twice (&amp;amp;)
    if "<" in text:
        text = _TAG.sub(" ", text)
    text = _REPEAT.sub(r"\1\1", text)
    return _WS.sub(" ", text).strip()


# --- informal Indonesian ---------------------------------------------------------------------------

#: Abbreviations of the CRM and Jakarta city services that general slang lists miss or get wrong
#: (indoNLP maps ``gg`` to "enggak" and ``kel`` to "keluarga"; in a complaint they are gang/kelurahan).
#: ``ocp`` is kept as a recognised token: its expansion is not documented anywhere we could cite.
CRM_ABBREVIATIONS: dict[str, str] = {
    "tl": "tindak lanjut",
    "tlg": "tolong",
    "ditl": "ditindaklanjuti",
    "mhn": "mohon",
    "mohon2": "mohon",
    "pju": "penerangan jalan umum",
    "pjl": "penerangan jalan lingkungan",
    "ppsu": "ppsu",
    "pkl": "pedagang kaki lima",
    "jpo": "jembatan penyeberangan orang",
    "gg": "gang",
    "jln": "jalan",
    "jl": "jalan",
    "jlan": "jalan",
    "jalanan": "jalan",
    "ocp": "ocp",
    "yg": "yang",
    "dgn": "dengan",
    "dg": "dengan",
    "tdk": "tidak",
    "gak": "tidak",
    "ga": "tidak",
    "gk": "tidak",
    "nggak": "tidak",
    "enggak": "tidak",
    "engga": "tidak",
    "sdh": "sudah",
    "udh": "sudah",
    "blm": "belum",
    "kel": "kelurahan",
    "kec": "kecamatan",
    "kab": "kabupaten",
    "prov": "provinsi",
    "pemprov": "pemerintah provinsi",
    "pemkot": "pemerintah kota",
    "dki": "dki",
    "lalin": "lalu lintas",
    "lantas": "lalu lintas",
    "apill": "alat pemberi isyarat lalu lintas",
    "dishub": "dinas perhubungan",
    "satpol": "satpol",
    "sudin": "suku dinas",
    "damkar": "pemadam kebakaran",
    "tpu": "tempat pemakaman umum",
    "tps": "tempat pembuangan sampah",
    "tpa": "tempat pembuangan akhir",
    "rptra": "ruang publik terpadu ramah anak",
    "pmks": "penyandang masalah kesejahteraan sosial",
    "odgj": "orang dengan gangguan jiwa",
    "kdm": "kawasan dilarang merokok",
    "ktr": "kawasan tanpa rokok",
    "pdam": "pdam",
    "pam": "pam",
    "tj": "transjakarta",
    "tije": "transjakarta",
    "busway": "busway",
    "krl": "krl",
    "mrt": "mrt",
    "lrt": "lrt",
    "ktp": "ktp",
    "kk": "kartu keluarga",
    "kjp": "kartu jakarta pintar",
    "kjs": "kartu jakarta sehat",
    "dbd": "demam berdarah",
    "rsud": "rumah sakit umum daerah",
    "pkm": "puskesmas",
    "sekolahan": "sekolah",
    "motor2": "motor",
    "mobil2": "mobil",
    "bhn": "bahan",
    "angkot": "angkutan kota",
    "ojol": "ojek online",
    "opang": "ojek pangkalan",
    "parkiran": "parkiran",
    "jukir": "juru parkir",
    "pak": "pak",
    "bu": "bu",
    "min": "admin",
    "mimin": "admin",
    "thx": "terima kasih",
    "tks": "terima kasih",
    "tq": "terima kasih",
    "trims": "terima kasih",
    "mksh": "terima kasih",
    "kaki5": "kaki lima",
    "rt": "rt",
    "rw": "rw",
    "dll": "dan lain lain",
    "dsb": "dan sebagainya",
    "sda": "sumber daya air",
    "dlh": "dinas lingkungan hidup",
    "dsda": "dinas sumber daya air",
    "pt": "pt",
    "dpn": "depan",
    "blkg": "belakang",
    "sblh": "sebelah",
    "skt": "sekitar",
    "sktr": "sekitar",
    "tgl": "tanggal",
    "no": "nomor",
    "sampe": "sampai",
    "smpe": "sampai",
    "bgt": "banget",
    "kmrn": "kemarin",
    "bs": "bisa",
    "krn": "karena",
    "karna": "karena",
    "utk": "untuk",
    "untk": "untuk",
    "trus": "terus",
    "trs": "terus",
    "lg": "lagi",
    "jg": "juga",
    "aja": "saja",
    "aj": "saja",
    "doang": "saja",
    "gmn": "bagaimana",
    "gimana": "bagaimana",
    "knp": "kenapa",
    "kpn": "kapan",
    "dr": "dari",
    "dri": "dari",
    "sy": "saya",
    "sya": "saya",
    "sm": "sama",
    "tp": "tapi",
    "tpi": "tapi",
    "klo": "kalau",
    "kalo": "kalau",
    "kl": "kalau",
    "bnyk": "banyak",
    "byk": "banyak",
    "msh": "masih",
    "hrs": "harus",
    "spt": "seperti",
    "kyk": "seperti",
    "kayak": "seperti",
    "kaya": "seperti",
    "lobang": "lubang",
    "bolong": "berlubang",
    "ambles": "amblas",
    "nyala": "menyala",
    "mati2": "mati",
    "gelap2": "gelap",
    "mampet": "tersumbat",
    "mampat": "tersumbat",
    "buntu": "tersumbat",
}

_REDUP_DIGIT = re.compile(r"\b([a-z]{2,})2(?=\W|$)")  # tiang2 → tiang
_REDUP_HYPHEN = re.compile(r"\b([a-z]{2,})-\1\b")  # tiang-tiang → tiang
_TOKEN = re.compile(r"\[(?:telepon|email|nik|url)\]|[a-z0-9]+")
_DOUBLE = re.compile(r"([a-z])\1+")


@lru_cache(maxsize=1)
def _slang_table() -> dict[str, str]:
    """indoNLP's slang table (MIT), without entries that are themselves standard words, overlaid by ours."""
    try:
        from indoNLP.preprocessing.slang_data import SLANG_DATA
    except ImportError:  # pragma: no cover - indoNLP is a declared dependency
        SLANG_DATA = {}
    roots = _root_words()
    table = {k: v for k, v in SLANG_DATA.items() if k not in roots and " " not in k and k.isalnum()}
    table.update(CRM_ABBREVIATIONS)
    return table


@lru_cache(maxsize=1)
def _root_words() -> frozenset[str]:
    """PySastrawi's dictionary of Indonesian root words (about 30,000)."""
    try:
        from Sastrawi.Stemmer.StemmerFactory import StemmerFactory
    except ImportError:  # pragma: no cover
        return frozenset()
    return frozenset(w.strip() for w in StemmerFactory().get_words() if w.strip())


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    words = set(_root_words())
    for value in _slang_table().values():
        words.update(value.split())
    words.update(_slang_table())
    return frozenset(words)


@lru_cache(maxsize=1)
def _stemmer():  # type: ignore[no-untyped-def]
    from Sastrawi.Stemmer.StemmerFactory import StemmerFactory

    return StemmerFactory().create_stemmer()


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """The root of one lower-case word (PySastrawi), e.g. ``ditertibkan`` → ``tertib``; cached."""
    if len(word) <= 3 or not word.isalpha() or word in _root_words():
        return word
    return _stemmer().stem(word) or word


@lru_cache(maxsize=200_000)
def _normalise_token(token: str) -> str:
    table = _slang_table()
    if token in table:
        return table[token]
    if token.startswith("[") or token.isdigit():
        return token
    vocab = _vocabulary()
    if token in vocab:
        return token
    # Elongation: "parkirr", "liaarr", "bangett" → collapse doubled letters if that gives a known word.
    if _DOUBLE.search(token):
        single = _DOUBLE.sub(r"\1", token)
        if single in table:
            return table[single]
        if single in vocab or (stem(single) in vocab and stem(single) != single):
            return single
    # Jakarta colloquial verbs: dibersihin → dibersihkan, benerin → benarkan (via the slang table).
    if len(token) > 5 and token.endswith("in"):
        base = token[:-2]
        base = table.get(base, base)
        if " " not in base and (base in vocab or stem(base) in vocab):
            return base + "kan"
    return token


def normalise(text: str) -> str:
    """Text as the classifier should see it: masked, cleaned, lower-cased, informal words expanded."""
    text = mask_pii(text).lower()
    if "http" in text or "www" in text:
        text = _URL.sub(" [url] ", text)
    if "2" in text:
        text = _REDUP_DIGIT.sub(r"\1", text)
    if "-" in text:
        text = _REDUP_HYPHEN.sub(r"\1", text)
    return " ".join(_normalise_token(t) for t in _TOKEN.findall(text))


def warm_up() -> None:
    """Load the slang table, dictionary and stemmer now rather than on the first report."""
    _vocabulary()
    stem("ditertibkan")
