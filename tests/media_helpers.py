"""Photos for the media tests, made here (no fixture files): JPEGs with a phone's EXIF and GPS."""

from __future__ import annotations

import io
import random

from PIL import Image

GPS_MONAS = (-6.175, 106.82)  # 6°10'30"S 106°49'12"E


def jpeg_with_exif(seed: int = 0, size: tuple[int, int] = (96, 64), gps: bool = True) -> bytes:
    """A JPEG that carries the phone model and, by default, the reporter's GPS position in EXIF."""
    rnd = random.Random(seed)
    img = Image.new("RGB", size, (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    for _ in range(20):  # some structure, so two seeds never encode to the same bytes
        x, y = rnd.randrange(size[0]), rnd.randrange(size[1])
        img.putpixel((x, y), (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    exif = Image.Exif()
    exif[0x010F] = "Samsung"
    exif[0x0110] = "SM-A515F"
    if gps:
        exif.get_ifd(0x8825).update({1: "S", 2: (6.0, 10.0, 30.0), 3: "E", 4: (106.0, 49.0, 12.0)})
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=90)
    return buf.getvalue()


def heic_with_exif() -> bytes:
    """What an iPhone sends: HEIC with the phone model and the GPS position in EXIF."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Apple", "iPhone 13"
    exif.get_ifd(0x8825).update({1: "S", 2: (6.0, 10.0, 30.0), 3: "E", 4: (106.0, 49.0, 12.0)})
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (30, 120, 200)).save(buf, "HEIF", exif=exif.tobytes())
    return buf.getvalue()


def png(seed: int = 0) -> bytes:
    img = Image.new("RGBA", (40, 30), (seed % 256, 80, 160, 200))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def has_exif(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as img:
        return bool(img.getexif()) or "exif" in img.info


#: not an image, named like one: a PDF
FAKE_JPEG = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
