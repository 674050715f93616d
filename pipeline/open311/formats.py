"""GeoReport v2 bodies in both formats: every endpoint exists as ``.json`` and ``.xml``.

JSON is a list (or, for a service definition, an object); XML wraps the same items in the spec's
element names (``<service_requests><request>…``, ``<services><service>…``, ``<errors><error>…``).
Lists inside an item (``attributes``, ``values``, ``keywords``) nest as the spec shows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree as ET  # building XML only; input is never parsed here

import orjson

FORMATS = ("json", "xml")
CONTENT_TYPES = {"json": "application/json", "xml": "text/xml"}

#: The element a list item gets, by the list's element name.
ITEM_OF = {
    "service_requests": "request",
    "services": "service",
    "errors": "error",
    "attributes": "attribute",
    "values": "value",
    "endpoints": "endpoint",
    "formats": "format",
    "media_urls": "media_url",
}
# XML 1.0 has no place for most control characters: drop them rather than emit an unreadable document.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def format_of(path: str) -> str:
    """The format a path asks for by its suffix (``requests.xml`` → xml); JSON otherwise."""
    return "xml" if path.lower().endswith(".xml") else "json"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("", str(value))


def _element(parent: ET.Element, name: str, value: Any) -> None:
    el = ET.SubElement(parent, name)
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _element(el, key, inner)
    elif isinstance(value, list | tuple):
        item = ITEM_OF.get(name, "item")
        for inner in value:
            _element(el, item, inner)
    else:
        el.text = _text(value)


def to_xml(root: str, data: Any) -> bytes:
    """``data`` (a list of items or one mapping) under ``root``, UTF-8 with the XML declaration."""
    el = ET.Element(root)
    if isinstance(data, Mapping):
        for key, value in data.items():
            _element(el, key, value)
    else:
        item = ITEM_OF.get(root, "item")
        for value in data:
            _element(el, item, value)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(el, encoding="unicode").encode()


def render(fmt: str, root: str, data: Any) -> tuple[bytes, str]:
    """The body and content type of ``data`` in ``fmt``; ``root`` names the XML document element."""
    if fmt == "xml":
        return to_xml(root, data), CONTENT_TYPES["xml"]
    return orjson.dumps(data), CONTENT_TYPES["json"]


def errors(status: int, description: str, code: str | None = None) -> list[dict[str, Any]]:
    """The spec's error list: ``[{code, description}]``; ``error_code`` names the reason for machines."""
    item: dict[str, Any] = {"code": status, "description": description}
    if code:
        item["error_code"] = code
    return [item]


def render_errors(fmt: str, status: int, description: str, code: str | None = None) -> tuple[bytes, str]:
    return render(fmt, "errors", errors(status, description, code))
