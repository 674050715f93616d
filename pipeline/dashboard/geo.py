"""The kelurahan boundaries (vendored GeoJSON) as SVG paths for the dashboard map, computed once."""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any

WIDTH = 1000.0
#: Kepulauan Seribu lies ~50 km out at sea; drawing it would shrink the mainland to a corner.
SKIP_KOTA = ("31.01",)


@lru_cache(maxsize=1)
def svg_map() -> dict[str, Any]:
    text = (resources.files("pipeline") / "data" / "jakarta_kelurahan_boundaries.geojson").read_text("utf-8")
    features = [
        f
        for f in json.loads(text)["features"]
        if not f["properties"]["kode_kemendagri"].startswith(SKIP_KOTA)
    ]

    def rings(geom: dict[str, Any]) -> list[list[list[float]]]:
        if geom["type"] == "Polygon":
            return list(geom["coordinates"])
        return [ring for poly in geom["coordinates"] for ring in poly]

    xs, ys = [], []
    for f in features:
        for ring in rings(f["geometry"]):
            for lon, lat in ring:
                xs.append(lon)
                ys.append(lat)
    min_lon, max_lon, min_lat, max_lat = min(xs), max(xs), min(ys), max(ys)
    kx = math.cos(math.radians((min_lat + max_lat) / 2))
    scale = WIDTH / ((max_lon - min_lon) * kx)
    height = (max_lat - min_lat) * scale

    def project(lon: float, lat: float) -> tuple[float, float]:
        return (lon - min_lon) * kx * scale, (max_lat - lat) * scale

    areas = []
    for f in features:
        p = f["properties"]
        parts = []
        for ring in rings(f["geometry"]):
            pts = [project(lon, lat) for lon, lat in ring]
            parts.append("M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in pts) + "Z")
        areas.append(
            {
                "code": p["kode_kemendagri"],
                "name": p.get("kelurahan") or p.get("nama"),
                "kecamatan": p.get("kecamatan"),
                "kota": p.get("kota_kabupaten"),
                "d": "".join(parts),
            }
        )
    return {
        "width": WIDTH,
        "height": round(height, 1),
        "areas": areas,
        "frame": {"min_lon": min_lon, "max_lon": max_lon, "min_lat": min_lat, "max_lat": max_lat, "kx": kx},
        "scale": scale,
    }


def project_point(lat: float, lon: float) -> tuple[float, float] | None:
    m = svg_map()
    f = m["frame"]
    if not (f["min_lon"] <= lon <= f["max_lon"] and f["min_lat"] <= lat <= f["max_lat"]):
        return None
    return round((lon - f["min_lon"]) * f["kx"] * m["scale"], 1), round((f["max_lat"] - lat) * m["scale"], 1)
