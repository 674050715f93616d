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

:func:`affixed_forms` generates the inflected forms of a root (the lexicon classifier maps them back, so
no stemmer runs per report); :func:`stem` (PySastrawi, cached) is there for callers that need a full one.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from functools import lru_cache

_REPEAT = re.compile(r"([^\d\s])\1\1+")  # letters and punctuation, never digits ("2.000.000")
_TAG = re.compile(r"<(?:[a-zA-Z/!][^<>]{0,200})>")
_URL = re.compile(r"(?i)\b(?:https?://|www\.)\S+")

# --- personal data -------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?i)(?<![\w.+-])[a-z0-9][a-z0-9._%+-]*@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b")
# NIK / KK: 16 digits, contiguous or in groups of 4-4-4-4 or 6-6-4.
_NIK = re.compile(r"(?<![\d+])\d{4}(?:\d{12}|[ .-]\d{4}[ .-]\d{4}[ .-]\d{4}|\d{2}[ .-]\d{6}[ .-]\d{4})(?!\d)")
# Phone numbers: an Indonesian prefix (+62, 62, 0) then a mobile (8xx) or area code, then digit groups.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\s?62|62|\(0\d{1,3}\)|0)[\s.-]?\(?\d{1,4}\)?(?:[\s.-]?\d{2,5}){1,4}(?!\d)"
)


_DIGIT_RUN = re.compile(r"\d{4}")  # cheap pre-check: every number we mask has four digits in a row


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


def mask_names(text: str, names: Iterable[str | None]) -> str:
    """The reporter's own name wherever the text repeats it (an e-mail signature, "saya Budi ...").

    The full name is masked in any case; a single part of it (3+ letters) only where it is written
    capitalised, so that a name that is also a common word ("Sari", "Jaya") is not masked in
    ordinary lower-case text.
    """
    full: set[str] = set()
    parts: set[str] = set()
    for name in names:
        if name and name.strip():
            words = name.split()
            full.add(" ".join(words))
            parts.update(w for w in words if len(w) >= 3 and w[:1].isalpha())
    if not full:
        return text
    alternatives = "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in sorted(full, key=len, reverse=True))
    text = re.sub(rf"(?<!\w)(?:{alternatives})(?!\w)", "[nama]", text, flags=re.IGNORECASE)
    for part in sorted(parts, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(part[:1].upper() + part[1:].lower())}(?!\w)", "[nama]", text)
        text = re.sub(rf"(?<!\w){re.escape(part.upper())}(?!\w)", "[nama]", text)
    return text


# --- cleaning ------------------------------------------------------------------------------------


def clean(text: str) -> str:
    """HTML entities and tags, runs of the same character (``bangeeeet`` → ``bangeet``) and whitespace."""
    if "&" in text:
        text = html.unescape(html.unescape(text))  # CRM exports are sometimes escaped twice (&amp;amp;)
    if "<" in text:
        text = _TAG.sub(" ", text)
    text = _REPEAT.sub(r"\1\1", text)
    return " ".join(text.split())


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
    "hub": "hubungi",
    "hubungin": "hubungi",
    "tlp": "telepon",
    "telp": "telepon",
    "wa": "whatsapp",
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


_TOKEN_CACHE: dict[str, str] = {}
_PREFIXES = ("di", "me", "mem", "men", "meng", "nge", "ke", "ter", "ber", "pe", "pen", "per")


def _affixed_known(word: str) -> bool:
    """A dictionary root behind a common prefix (dibersih → bersih), without running the stemmer."""
    vocab = _vocabulary()
    return any(word.startswith(p) and word[len(p) :] in vocab for p in _PREFIXES if len(word) - len(p) >= 3)


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
        if single in vocab or _affixed_known(single):
            return single
    # Jakarta colloquial verbs: dibersihin → dibersihkan, benerin → benarkan (via the slang table).
    if len(token) > 5 and token.endswith("in"):
        base = token[:-2]
        base = table.get(base, base)
        if " " not in base and (base in vocab or _affixed_known(base)):
            return base + "kan"
    return token


def normalise(text: str) -> str:
    """Text as the classifier should see it: masked, cleaned, lower-cased, informal words expanded."""
    return normalise_masked(mask_pii(text))


def normalise_masked(masked: str) -> str:
    """:func:`normalise` of a text :func:`mask_pii` has already masked (the chain masks a report's
    text once, for its public text and for this)."""
    text = masked.lower()
    if "http" in text or "www" in text:
        text = _URL.sub(" [url] ", text)
    if "2" in text:
        text = _REDUP_DIGIT.sub(r"\1", text)
    if "-" in text:
        text = _REDUP_HYPHEN.sub(r"\1", text)
    cache = _TOKEN_CACHE
    if len(cache) > 300_000:
        cache.clear()
    out = []
    for t in _TOKEN.findall(text):
        n = cache.get(t)
        if n is None:
            n = cache[t] = _normalise_token(t)
        out.append(n)
    return " ".join(out)


_SUFFIXES = ("", "kan", "an", "i", "nya", "lah", "kannya", "annya", "inya", "in", "innya")
_VOWELS = frozenset("aeiou")


def _nasal(prefix: str, root: str) -> list[str]:
    """meN-/peN- + root with the nasal assimilation of standard Indonesian (and colloquial nge-)."""
    head = root[0]
    forms = []
    if head in _VOWELS:
        forms += [f"{prefix}ng{root}", f"ng{root}"]
    elif head in "bfv":
        forms.append(f"{prefix}m{root}")
    elif head == "p":
        forms += [f"{prefix}m{root[1:]}", f"{prefix}m{root}"]
    elif head in "cdjz":
        forms.append(f"{prefix}n{root}")
    elif head == "t":
        forms += [f"{prefix}n{root[1:]}", f"{prefix}n{root}", f"n{root[1:]}"]
    elif head == "s":
        forms += [f"{prefix}ny{root[1:]}", f"{prefix}n{root}", f"ny{root[1:]}"]
    elif head == "k":
        forms += [f"{prefix}ng{root[1:]}", f"{prefix}ng{root}", f"ng{root[1:]}"]
    elif head in "gh":
        forms.append(f"{prefix}ng{root}")
    else:  # l, m, n, r, w, y
        forms.append(f"{prefix}{root}")
    forms += [f"{prefix}nge{root}", f"nge{root}"]
    return forms


@lru_cache(maxsize=20_000)
def affixed_forms(root: str) -> frozenset[str]:
    """Inflected and derived forms of an Indonesian root: ``tumpuk`` → menumpuk, tertumpuk, tumpukan, ….

    Used in reverse (form → root) so the lexicon classifier needs no stemmer at run time; it
    over-generates a little, which is harmless for matching.
    """
    if len(root) < 3 or not root.isalpha():
        return frozenset({root})
    stems = {root, "di" + root, "ter" + root, "ber" + root, "be" + root, "ke" + root, "se" + root,
             "per" + root, "diper" + root, "memper" + root, "pe" + root}  # fmt: skip
    stems.update(_nasal("me", root))
    stems.update(_nasal("pe", root))
    forms = {s + suffix for s in stems for suffix in _SUFFIXES}
    forms.add(f"ke{root}an")
    forms.add(f"ber{root}an")
    return frozenset(forms)


def root_words() -> frozenset[str]:
    """The Indonesian root-word dictionary of PySastrawi (about 30,000 words)."""
    return _root_words()


def warm_up() -> None:
    """Load the slang table and dictionary now rather than on the first report."""
    _vocabulary()
