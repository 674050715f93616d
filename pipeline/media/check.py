"""What may be kept: content sniffed by its magic bytes, allowed types, a size cap, an image that
decodes, and a public copy without EXIF (the reporter's GPS position and phone model stay in the
original only, which only roles that may read contacts can read).

Pure functions: no I/O, so every rule is tested directly.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

try:  # iPhones send HEIC by default; libheif comes inside the pillow-heif wheel
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIC = True
except ImportError:  # pragma: no cover - a deployment without the package refuses HEIC with a reason
    HEIC = False

# A 50-megapixel photo decodes; a decompression bomb (a tiny file that decodes to gigabytes) does not.
MAX_PIXELS = 60_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

THUMB_PX = 320

#: magic bytes -> (media type, extension). AVIF needs a plug-in this deployment lacks: refused with a reason.
_HEIF_BRANDS = (b"heic", b"heix", b"mif1", b"msf1", b"heim")
_IMAGE_MAGIC: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg", "jpg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png", "png"),
    (b"GIF87a", 0, "image/gif", "gif"),
    (b"GIF89a", 0, "image/gif", "gif"),
    *((b"ftyp" + brand, 4, "image/heic", "heic") for brand in _HEIF_BRANDS),
)
_OTHER_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"%PDF", 0, "a PDF document"),
    (b"PK\x03\x04", 0, "a ZIP archive (or an Office document)"),
    (b"\x7fELF", 0, "a Linux executable"),
    (b"MZ", 0, "a Windows executable"),
    (b"ftypavif", 4, "an AVIF image (not supported)"),
    (b"ftyp", 4, "a video (MP4/MOV)"),
    (b"<?xml", 0, "an XML or SVG document"),
    (b"<svg", 0, "an SVG document (not accepted: it can carry scripts)"),
    (b"<!DOCTYPE", 0, "an HTML page"),
    (b"<html", 0, "an HTML page"),
    (b"OggS", 0, "an audio file (Ogg)"),
    (b"ID3", 0, "an audio file (MP3)"),
)


class MediaRefused(Exception):
    """The content is not kept; ``reason`` is for the officer who sees it in the failed list."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def sniff(data: bytes) -> tuple[str, str] | None:
    """(media type, extension) of an allowed image judged by its first bytes alone, else None."""
    for magic, offset, mime, ext in _IMAGE_MAGIC:
        if data[offset : offset + len(magic)] == magic and (HEIC or mime != "image/heic"):
            return mime, ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return None


def describe(data: bytes) -> str:
    """What the bytes look like, for a refusal reason a person understands."""
    if not data:
        return "empty"
    for magic, offset, what in _OTHER_MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return what
    if all(32 <= b < 127 or b in (9, 10, 13) for b in data[:512]):
        return "text"
    return f"unknown binary data (starts {data[:8].hex()})"


@dataclass(frozen=True)
class Checked:
    """An accepted image: the original as received, and the copies that are shown."""

    sha256: str  # of the original bytes: the content address
    media_type: str
    ext: str
    size: int
    width: int
    height: int
    public: bytes  # EXIF-free re-encoding, what Open311 and agencies see
    public_type: str
    thumb: bytes  # JPEG, at most THUMB_PX on its longer side (the dashboard's report page)
    had_exif: bool
    gps: tuple[float, float] | None  # from the original's EXIF, a location candidate


def check_image(
    data: bytes,
    *,
    max_bytes: int,
    allowed: frozenset[str],
    name: str | None = None,
    declared: str | None = None,
) -> Checked:
    """Accept an image or raise :class:`MediaRefused`. ``name``/``declared`` are only used in reasons:
    the bytes decide, so a PDF renamed ``foto.jpg`` is still a PDF."""
    if len(data) > max_bytes:
        raise MediaRefused(
            f"{_mb(len(data))} is larger than the {_mb(max_bytes)} limit for a photo", "too_large"
        )
    found = sniff(data)
    label = f"{name!r} " if name else ""
    if found is None:
        claimed = f" although named/declared as {name or declared}" if (name or declared) else ""
        raise MediaRefused(f"{label}is {describe(data)}, not a photo{claimed}", "not_an_image")
    mime, ext = found
    if mime not in allowed:
        raise MediaRefused(f"{label}is {mime}, which is not accepted ({', '.join(sorted(allowed))})", "type")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            exif = img.getexif()
            had_exif = bool(exif) or "exif" in img.info
            gps = _gps(exif)
            width, height = img.size
            shown = ImageOps.exif_transpose(img)  # keep the photo upright once the EXIF is gone
            public, public_type = _public_copy(shown, mime)
            thumb = _thumbnail(shown)
    except Image.DecompressionBombError:
        raise MediaRefused(f"{label}decodes to more than {MAX_PIXELS:,} pixels", "too_many_pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MediaRefused(f"{label}looks like {mime} but does not decode: {exc}", "corrupt") from None
    return Checked(
        sha256=hashlib.sha256(data).hexdigest(),
        media_type=mime,
        ext=ext,
        size=len(data),
        width=width,
        height=height,
        public=public,
        public_type=public_type,
        thumb=thumb,
        had_exif=had_exif,
        gps=gps,
    )


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


def _public_copy(img: Image.Image, mime: str) -> tuple[bytes, str]:
    """Re-encoded from pixels only, so no metadata block (EXIF, XMP, ICC comments, PNG text) survives."""
    buf = io.BytesIO()
    if mime == "image/png" or (img.mode in ("RGBA", "LA", "P") and "transparency" in img.info):
        clean = Image.new(img.mode if img.mode != "P" else "RGBA", img.size)
        clean.paste(img.convert(clean.mode))
        clean.save(buf, "PNG", optimize=False)
        return buf.getvalue(), "image/png"
    img.convert("RGB").save(buf, "JPEG", quality=88)
    return buf.getvalue(), "image/jpeg"


def _thumbnail(img: Image.Image) -> bytes:
    small = img.convert("RGB")
    small.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _gps(exif: Image.Exif) -> tuple[float, float] | None:
    """Decimal (lat, lon) from the EXIF GPS block, or None when absent or implausible."""
    try:
        info = exif.get_ifd(0x8825)
        lat = _degrees(info[2], info.get(1, "N"), "S")
        lon = _degrees(info[4], info.get(3, "E"), "W")
    except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        return None
    return round(lat, 7), round(lon, 7)


def _degrees(dms: tuple[float, float, float], ref: str | bytes, negative: str) -> float:
    d, m, s = (float(x) for x in dms)
    value = d + m / 60 + s / 3600
    ref = ref.decode() if isinstance(ref, bytes) else ref
    return -value if str(ref).strip().upper().startswith(negative) else value
