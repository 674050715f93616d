"""Location. PLACEHOLDER: the triage issue (#8) resolves kota/kecamatan/kelurahan from coordinates,
desk office and text."""

from __future__ import annotations

from ..envelope import Location, Region


class PlaceholderGazetteer:
    def locate(self, location: Location, text: str) -> tuple[Region | None, str]:
        return None, "placeholder gazetteer: location not resolved until #8"


def load_gazetteer() -> PlaceholderGazetteer:
    return PlaceholderGazetteer()
