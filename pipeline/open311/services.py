"""Services (one per report category of the routing table) and their definitions (attributes).

Every service takes the same attributes: ``kelurahan`` (the Kemendagri code of the place; the worker
locates the report there when the address does not say), ``private`` (the citizen asks not to be
named in anything public) and ``title`` (a short title, as FixMyStreet sends it). ``address_id`` of a
POST is a kelurahan code too: the city has no address register, the kelurahan is its finest unit.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..processors.locate import GAZETTEER_CSV
from ..processors.route import RouteRule, load_router


@dataclass(frozen=True, slots=True)
class Kelurahan:
    code: str
    name: str
    kecamatan: str
    kota: str
    zipcode: str | None

    @property
    def label(self) -> str:
        return f"Kel. {self.name}, Kec. {self.kecamatan}, {self.kota}"


@lru_cache(maxsize=1)
def kelurahan_table() -> dict[str, Kelurahan]:
    """Kelurahan by Kemendagri code (``31.71.05.1001``; the undotted ``3171051001`` is accepted too)."""
    out: dict[str, Kelurahan] = {}
    with GAZETTEER_CSV.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["level"] != "kelurahan":
                continue
            kel = Kelurahan(
                code=row["kode_kemendagri"],
                name=row["nama"],
                kecamatan=row["kecamatan"],
                kota=row["kota_kabupaten"],
                zipcode=row["kode_pos"] or None,
            )
            out[kel.code] = out[row["kode_kemendagri_nodot"]] = kel
    return out


def find_kelurahan(code: str | None) -> Kelurahan | None:
    return kelurahan_table().get(code.strip()) if code else None


def service_name(code: str | None) -> str:
    return (code or "belum dikategorikan").replace("_", " ").capitalize()


def _service(rule: RouteRule) -> dict[str, Any]:
    return {
        "service_code": rule.category,
        "service_name": service_name(rule.category),
        "description": rule.note,
        "metadata": True,
        "type": "realtime",
        "keywords": ", ".join(rule.crm_categories),
        "group": rule.agency.name,
    }


def services() -> list[dict[str, Any]]:
    return [_service(rule) for rule in load_router().rules.values()]


def service_codes() -> frozenset[str]:
    return frozenset(load_router().rules)


@lru_cache(maxsize=1)
def _attributes() -> tuple[dict[str, Any], ...]:
    kelurahan = sorted({k.code: k for k in kelurahan_table().values()}.values(), key=lambda k: k.code)
    return (
        {
            "variable": True,
            "code": "kelurahan",
            "datatype": "singlevaluelist",
            "required": False,
            "datatype_description": "Kemendagri code of the kelurahan, e.g. 31.71.05.1001",
            "order": 1,
            "description": "Kelurahan tempat masalah (where the problem is)",
            "values": [{"key": k.code, "name": k.label} for k in kelurahan],
        },
        {
            "variable": True,
            "code": "private",
            "datatype": "singlevaluelist",
            "required": False,
            "datatype_description": "true or false",
            "order": 2,
            "description": "Rahasiakan identitas saya (do not name me in anything public)",
            "values": [{"key": "true", "name": "Ya / yes"}, {"key": "false", "name": "Tidak / no"}],
        },
        {
            "variable": True,
            "code": "title",
            "datatype": "string",
            "required": False,
            "datatype_description": "at most 200 characters",
            "order": 3,
            "description": "Judul singkat laporan (a short title)",
            "values": [],
        },
    )


ATTRIBUTE_CODES = frozenset({"kelurahan", "private", "title"})


def definition(code: str) -> dict[str, Any] | None:
    if code not in service_codes():
        return None
    return {"service_code": code, "attributes": list(_attributes())}
