"""Resolving reports to kota / kecamatan / kelurahan (Kemendagri codes) from coordinates, desk and text."""

from __future__ import annotations

import pytest

from pipeline.envelope import Location
from pipeline.processors.locate import _M_PER_DEG_LAT, _M_PER_DEG_LON, load_gazetteer

KALIBARU = "31.72.04.1004"  # Kelurahan Kalibaru, Kecamatan Cilincing, Jakarta Utara
CILINCING_KEL = "31.72.04.1001"


@pytest.fixture(scope="module")
def gaz():  # type: ignore[no-untyped-def]
    return load_gazetteer()


def test_gazetteer_has_every_kelurahan_with_boundaries(gaz) -> None:  # type: ignore[no-untyped-def]
    kel = [p for p in gaz.places if p.level == "kelurahan"]
    assert len(kel) == 267
    assert len(gaz.polygons) == 267
    assert gaz.kota_codes() == ["31.01", "31.71", "31.72", "31.73", "31.74", "31.75"]


def test_point_inside_a_kelurahan_gives_the_full_region(gaz) -> None:  # type: ignore[no-untyped-def]
    region, why = gaz.locate(Location(lat=-6.101002, lon=106.932576), "lampu mati")
    assert region is not None
    assert (region.kelurahan, region.kelurahan_code) == ("Kalibaru", KALIBARU)
    assert (region.kecamatan, region.kecamatan_code) == ("Cilincing", "31.72.04")
    assert (region.kota, region.kota_code) == ("Kota Administrasi Jakarta Utara", "31.72")
    assert "inside kelurahan Kalibaru" in why


def test_points_either_side_of_a_boundary(gaz) -> None:  # type: ignore[no-untyped-def]
    # 25 m either side of the Kalibaru / Cilincing boundary, about 50 m apart
    north, _ = gaz.locate(Location(lat=-6.101416, lon=106.932757), "")
    south, _ = gaz.locate(Location(lat=-6.101002, lon=106.932576), "")
    assert north is not None and north.kelurahan_code == CILINCING_KEL
    assert south is not None and south.kelurahan_code == KALIBARU


def test_grid_cells_answer_as_the_exact_lookup_does_across_the_province() -> None:
    """by_point remembers the cells one kelurahan holds whole; every answer must be what the tree
    query and containment test give: points all over the province and its sea, and points a few
    metres from every boundary vertex (where cells are shared and the exact path must decide)."""
    import random

    gaz = load_gazetteer()  # a fresh one: the module's fixture may already have cells
    rnd = random.Random(19)
    points = [(rnd.uniform(-6.38, -5.98), rnd.uniform(106.65, 107.0)) for _ in range(20_000)]
    for geom in list(gaz.polygons.values())[::5]:
        polys = getattr(geom, "geoms", [geom])  # a MultiPolygon's parts, or the Polygon itself
        for x, y in [xy for poly in polys for xy in list(poly.exterior.coords)[::7]]:
            lat, lon = y / _M_PER_DEG_LAT, x / _M_PER_DEG_LON
            points += [(lat + rnd.uniform(-4e-5, 4e-5), lon + rnd.uniform(-4e-5, 4e-5)) for _ in range(3)]
    rnd.shuffle(points)
    for lat, lon in points * 2:  # the second pass answers from the remembered cells
        assert gaz.by_point(lat, lon) == gaz.by_point_exactly(lat, lon), (lat, lon)
    whole = sum(1 for code in gaz._cells.values() if code)
    assert whole > 3_000 and len(gaz._cells) > whole  # both kinds of cell were met


def test_point_just_outside_the_simplified_shapes_takes_the_nearest(gaz) -> None:  # type: ignore[no-untyped-def]
    # Kalibaru's own centroid lies on the coast, ~450 m outside its simplified polygon
    region, why = gaz.locate(Location(lat=-6.0949268, lon=106.9159791), "")
    assert region is not None and region.kelurahan_code == KALIBARU
    assert "m outside kelurahan Kalibaru" in why and "nearest" in why


def test_point_far_at_sea_falls_back_to_the_text(gaz) -> None:  # type: ignore[no-untyped-def]
    region, why = gaz.locate(Location(lat=-6.06, lon=106.92), "banjir di kel. kebon jeruk")
    assert region is not None and region.kelurahan == "Kebon Jeruk"
    assert region.kota == "Kota Administrasi Jakarta Barat"
    assert why.startswith("text:")


@pytest.mark.parametrize(
    "spelling",
    ["Kel. Kali Baru", "kelurahan kalibaru", "KELURAHAN KALI BARU", "kel kali  baru", "Kel.Kalibaru"],
)
def test_kali_baru_and_kalibaru_are_the_same_kelurahan(gaz, spelling: str) -> None:  # type: ignore[no-untyped-def]
    region, _ = gaz.locate(Location(address=spelling), "")
    assert region is not None and region.kelurahan_code == KALIBARU


def test_common_words_are_not_place_names_without_a_prefix(gaz) -> None:  # type: ignore[no-untyped-def]
    # "kali baru" here means "only then", "baru" and "tengah" are kelurahan names but ordinary words too
    region, _ = gaz.locate(Location(), "sudah 3 kali baru diperbaiki, di tengah jalan")
    assert region is None


def test_longer_name_beats_its_prefix_across_kota(gaz) -> None:  # type: ignore[no-untyped-def]
    # Menteng (Jakarta Pusat) vs Menteng Dalam (Tebet, Jakarta Selatan), even abbreviated
    region, _ = gaz.locate(Location(), "sampah numpuk di kel. menteng dlm")
    assert region is not None and region.kelurahan == "Menteng Dalam"
    assert region.kota_code == "31.74"
    region, _ = gaz.locate(Location(), "kramat jati")
    assert region is not None and region.kecamatan == "Kramatjati" and region.kota_code == "31.75"


def test_misspelt_name_after_a_prefix_is_matched_fuzzily(gaz) -> None:  # type: ignore[no-untyped-def]
    region, why = gaz.locate(Location(), "parkir liar di Kel Cipinang Besar Selatn")
    assert region is not None and region.kelurahan == "Cipinang Besar Selatan"
    assert "fuzzy" in why


def test_name_shared_by_kecamatan_and_kelurahan_without_prefix_is_kecamatan(gaz) -> None:  # type: ignore[no-untyped-def]
    region, _ = gaz.locate(Location(), "banjir di tambora")
    assert region is not None and region.kecamatan == "Tambora" and region.kelurahan is None
    region, _ = gaz.locate(Location(), "banjir di kelurahan tambora")
    assert region is not None and region.kelurahan == "Tambora"


def test_street_named_after_an_area_is_weak_evidence(gaz) -> None:  # type: ignore[no-untyped-def]
    region, _ = gaz.locate(Location(), "jl. kalibata raya")
    assert region is None


def test_kota_shorthand(gaz) -> None:  # type: ignore[no-untyped-def]
    region, _ = gaz.locate(Location(), "pohon tumbang di jaksel")
    assert region is not None and region.kota_code == "31.74" and region.kecamatan is None


@pytest.mark.parametrize("desk", ["31.72.04.1004", "3172041004", "Kantor Kelurahan Kali Baru"])
def test_desk_office_by_code_or_name(gaz, desk: str) -> None:  # type: ignore[no-untyped-def]
    region, why = gaz.locate(Location(desk_office=desk), "")
    assert region is not None and region.kelurahan_code == KALIBARU
    assert "desk office" in why


def test_desk_office_at_kecamatan_or_kota_level(gaz) -> None:  # type: ignore[no-untyped-def]
    region, _ = gaz.locate(Location(desk_office="Kecamatan Cilincing"), "")
    assert region is not None and region.kecamatan_code == "31.72.04" and region.kelurahan is None
    region, _ = gaz.locate(Location(desk_office="Kantor Walikota Jakarta Utara"), "")
    assert region is not None and region.kota_code == "31.72" and region.kecamatan is None


def test_city_hall_desk_falls_back_to_the_text(gaz) -> None:  # type: ignore[no-untyped-def]
    region, why = gaz.locate(Location(desk_office="Pendopo Balai Kota"), "jalan rusak di kelurahan klender")
    assert region is not None and region.kelurahan == "Klender"
    assert "names no kota" in why or why.startswith("text:")


def test_nothing_to_go_on(gaz) -> None:  # type: ignore[no-untyped-def]
    region, why = gaz.locate(Location(), "lampu mati sudah seminggu")
    assert region is None
    assert "no coordinates" in why
