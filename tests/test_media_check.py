"""The rules of what media is kept (pipeline/media/check.py): pure, no servers."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.media.check import MediaRefused, check_image, describe, sniff
from tests.media_helpers import FAKE_JPEG, GPS_MONAS, has_exif, heic_with_exif, jpeg_with_exif, png

ALLOWED = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/heic"})


def check(data: bytes, **kw):  # type: ignore[no-untyped-def]
    return check_image(
        data, max_bytes=kw.pop("max_bytes", 5_000_000), allowed=kw.pop("allowed", ALLOWED), **kw
    )


def test_jpeg_public_copy_has_no_exif_and_gps_is_kept_as_candidate() -> None:
    data = jpeg_with_exif()
    assert has_exif(data) and b"SM-A515F" in data
    c = check(data, name="foto.jpg")
    assert c.media_type == "image/jpeg" and c.had_exif
    assert c.gps == pytest.approx(GPS_MONAS)
    assert not has_exif(c.public) and b"SM-A515F" not in c.public and b"Samsung" not in c.public
    with Image.open(io.BytesIO(c.public)) as img:
        assert img.size == (96, 64)
    with Image.open(io.BytesIO(c.thumb)) as img:
        assert max(img.size) <= 320


def test_same_bytes_same_address_different_bytes_different_address() -> None:
    assert check(jpeg_with_exif(1)).sha256 == check(jpeg_with_exif(1)).sha256
    assert check(jpeg_with_exif(1)).sha256 != check(jpeg_with_exif(2)).sha256


def test_heic_from_an_iphone_becomes_an_exif_free_jpeg_and_keeps_its_gps() -> None:
    data = heic_with_exif()
    c = check(data, name="IMG_0042.HEIC")
    assert c.media_type == "image/heic" and c.ext == "heic" and c.had_exif
    assert c.gps == pytest.approx(GPS_MONAS)
    assert c.public_type == "image/jpeg" and c.public[:3] == b"\xff\xd8\xff"
    assert not has_exif(c.public) and b"iPhone" not in c.public


def test_png_stays_png_without_text_chunks() -> None:
    c = check(png())
    assert c.media_type == "image/png" and c.public_type == "image/png" and c.gps is None


def test_non_image_renamed_jpg_is_refused_with_what_it_is() -> None:
    with pytest.raises(MediaRefused) as err:
        check(FAKE_JPEG, name="foto.jpg", declared="image/jpeg")
    assert err.value.code == "not_an_image"
    assert "PDF" in err.value.reason and "foto.jpg" in err.value.reason


def test_too_large_is_refused_before_decoding() -> None:
    with pytest.raises(MediaRefused) as err:
        check(jpeg_with_exif(), max_bytes=10_000 // 10)
    assert err.value.code == "too_large" and "limit" in err.value.reason


def test_truncated_jpeg_does_not_decode() -> None:
    data = jpeg_with_exif()
    with pytest.raises(MediaRefused) as err:
        check(data[: len(data) // 3])
    assert err.value.code == "corrupt"


def test_type_not_allowed() -> None:
    with pytest.raises(MediaRefused) as err:
        check(png(), allowed=frozenset({"image/jpeg"}))
    assert err.value.code == "type"


def test_sniff_and_describe() -> None:
    assert sniff(jpeg_with_exif()) == ("image/jpeg", "jpg")
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("image/webp", "webp")
    assert sniff(b"\x00\x00\x00\x18ftypheic") == ("image/heic", "heic")
    assert sniff(b"\x00\x00\x00\x18ftypavif") is None and "AVIF" in describe(b"\x00\x00\x00\x18ftypavif")
    assert "video" in describe(b"\x00\x00\x00\x18ftypisom")
    assert describe(b"hello world") == "text"
    assert describe(b"") == "empty"
