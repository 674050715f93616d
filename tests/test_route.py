"""Routing by the versioned routing table: agency, its regional office, expected days and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.envelope import Region
from pipeline.processors.route import AGENCIES_TABLE, ROUTING_TABLE, RoutingTableError, load_router

KALIBARU = Region(
    kota="Kota Administrasi Jakarta Utara",
    kota_code="31.72",
    kecamatan="Cilincing",
    kecamatan_code="31.72.04",
    kelurahan="Kalibaru",
    kelurahan_code="31.72.04.1004",
)
ONLY_KOTA = Region(kota="Kota Administrasi Jakarta Selatan", kota_code="31.74")


@pytest.fixture(scope="module")
def router():  # type: ignore[no-untyped-def]
    return load_router()


def test_agencies_are_official_names_one_topic_each(router) -> None:  # type: ignore[no-untyped-def]
    names = router.agencies()
    for official in ("Dinas Bina Marga", "Satuan Polisi Pamong Praja", "Dinas Perhubungan", "Kelurahan",
                     "Dinas Pertamanan dan Hutan Kota", "Dinas Sumber Daya Air",
                     "Badan Pembinaan Badan Usaha Milik Daerah"):  # fmt: skip
        assert official in names
    assert len(names) == len(set(names))


def test_kota_codes_are_kemendagri(router) -> None:  # type: ignore[no-untyped-def]
    assert router.kota_codes() == ["31.01", "31.71", "31.72", "31.73", "31.74", "31.75"]


def test_every_category_of_the_shared_table_is_routed(router) -> None:  # type: ignore[no-untyped-def]
    assert len(router.categories()) == 23
    for category in router.categories():
        d = router.route(category, 0.9, KALIBARU)
        assert d.routed_to == "agency" and d.agency in router.agencies()
        assert d.reason


@pytest.mark.parametrize(
    ("category", "agency", "unit"),
    [
        ("road_damage", "Dinas Bina Marga", "Suku Dinas Bina Marga Kota Administrasi Jakarta Utara"),
        ("street_lights", "Dinas Bina Marga", "Suku Dinas Bina Marga Kota Administrasi Jakarta Utara"),
        ("illegal_parking", "Dinas Perhubungan", "Suku Dinas Perhubungan Kota Administrasi Jakarta Utara"),
        (
            "street_vendors",
            "Satuan Polisi Pamong Praja",
            "Satuan Polisi Pamong Praja Kota Administrasi Jakarta Utara",
        ),
        ("garbage", "Kelurahan", "Kelurahan Kalibaru, Kecamatan Cilincing"),
        ("kelurahan_services", "Kelurahan", "Kelurahan Kalibaru, Kecamatan Cilincing"),
        ("clean_water", "Badan Pembinaan Badan Usaha Milik Daerah", None),
    ],
)
def test_category_to_agency_and_office(router, category: str, agency: str, unit: str | None) -> None:  # type: ignore[no-untyped-def]
    d = router.route(category, 0.9, KALIBARU)
    assert (d.routed_to, d.agency, d.agency_unit) == ("agency", agency, unit)
    assert d.reason.startswith(f"{category} → {agency} (routing table v1:")


def test_street_lights_and_garbage_follow_practice_not_category_names(router) -> None:  # type: ignore[no-untyped-def]
    assert "Bina Marga" in router.route("street_lights", 0.9, KALIBARU).reason
    assert "PPSU" in router.route("garbage", 0.9, KALIBARU).reason


def test_expected_days_default_seven_and_table_override(router) -> None:  # type: ignore[no-untyped-def]
    assert router.route("road_damage", 0.9, KALIBARU).expected_days == 7
    assert router.route("fire_rescue", 0.9, KALIBARU).expected_days == 1


def test_low_confidence_goes_to_triage_with_reason(router) -> None:  # type: ignore[no-untyped-def]
    d = router.route("road_damage", 0.2, KALIBARU)
    assert (d.routed_to, d.agency, d.agency_unit) == ("triage", None, None)
    assert "below" in d.reason and "Dinas Bina Marga" in d.reason


def test_the_models_threshold_decides_and_the_tables_row_overrides_it(tmp_path: Path) -> None:
    router = load_router()
    # a calibrated model says: dispatch at 0.9 or more (its threshold for the target precision)
    d = router.route("road_damage", 0.85, KALIBARU, 0.9, "model m1 at precision 0.95")
    assert d.routed_to == "triage" and d.threshold == 0.9
    assert "below 0.90 (model m1 at precision 0.95)" in d.reason and "Dinas Bina Marga" in d.reason
    d = router.route("road_damage", 0.93, KALIBARU, 0.9, "model m1 at precision 0.95")
    assert d.routed_to == "agency" and "≥ 0.90 (model m1 at precision 0.95)" in d.reason
    # below the old guessed default (0.35), a model that knows better still dispatches
    assert router.route("road_damage", 0.3, KALIBARU, 0.25).routed_to == "agency"
    # the routing table's own threshold for a category wins over the model's
    old, new = "road_damage,bina_marga,7,,", "road_damage,bina_marga,7,0.97,"
    strict = load_router(_copy_tables(tmp_path, edit_routing=lambda t: t.replace(old, new)))
    d = strict.route("road_damage", 0.95, KALIBARU, 0.9)
    assert d.routed_to == "triage" and d.threshold == 0.97 and "threshold for road_damage" in d.reason


def test_no_or_unknown_category_goes_to_triage(router) -> None:  # type: ignore[no-untyped-def]
    assert router.route(None, 0.0, KALIBARU).routed_to == "triage"
    d = router.route("alien_invasion", 0.99, KALIBARU)
    assert d.routed_to == "triage" and "not in the routing table" in d.reason


def test_region_unknown_goes_to_the_agency_itself(router) -> None:  # type: ignore[no-untyped-def]
    d = router.route("road_damage", 0.9, None)
    assert (d.routed_to, d.agency, d.agency_unit) == ("agency", "Dinas Bina Marga", None)
    assert "unknown" in d.reason


def test_kelurahan_work_without_a_kelurahan_needs_a_person(router) -> None:  # type: ignore[no-untyped-def]
    d = router.route("garbage", 0.9, ONLY_KOTA)
    assert d.routed_to == "triage" and d.agency is None and "kelurahan is unknown" in d.reason


def test_classifier_trained_on_agency_labels_is_routed_directly(router) -> None:  # type: ignore[no-untyped-def]
    d = router.route("DINAS PERTAMANAN DAN HUTAN", 0.8, KALIBARU)
    assert d.agency == "Dinas Pertamanan dan Hutan Kota"
    assert d.agency_unit == "Suku Dinas Pertamanan dan Hutan Kota Kota Administrasi Jakarta Utara"
    assert router.route("UNIT PENGELOLA PERPARKIRAN", 0.8, KALIBARU).agency == "Dinas Perhubungan"
    assert router.route("other", 0.9, KALIBARU).routed_to == "triage"


def _copy_tables(tmp_path: Path, edit_routing=None, edit_agencies=None) -> Path:  # type: ignore[no-untyped-def]
    routing = ROUTING_TABLE.read_text(encoding="utf-8")
    agencies = AGENCIES_TABLE.read_text(encoding="utf-8")
    (tmp_path / "routing_table.v2.csv").write_text(edit_routing(routing) if edit_routing else routing)
    (tmp_path / "agencies.v2.csv").write_text(edit_agencies(agencies) if edit_agencies else agencies)
    return tmp_path / "routing_table.v2.csv"


def test_ops_can_edit_a_copy_of_the_table(tmp_path: Path) -> None:
    old, new = "road_damage,bina_marga,7,,", "road_damage,bina_marga,3,0.9,"
    path = _copy_tables(tmp_path, edit_routing=lambda t: t.replace(old, new))
    router = load_router(path)
    assert router.version == "v2"
    assert router.route("road_damage", 0.95, KALIBARU).expected_days == 3
    assert router.route("road_damage", 0.8, KALIBARU).routed_to == "triage"  # its own threshold


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("road_damage,bina_marga", "road_damage,bina_margaa"), "agency_id 'bina_margaa'"),
        (lambda t: t.replace("road_damage,bina_marga,7", "road_damage,bina_marga,seven"), "expected_days"),
        (lambda t: t.replace("road_damage,bina_marga,7,", "road_damage,bina_marga,7,1.5"), "min_confidence"),
        (lambda t: t.replace("street_lights,", "road_damage,"), "appears twice"),
        (lambda t: t.replace("category,agency_id", "kategori,agency_id"), "header lacks"),
    ],
)
def test_bad_routing_table_names_file_and_line(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = _copy_tables(tmp_path, edit_routing=edit)
    with pytest.raises(RoutingTableError) as err:
        load_router(path)
    text = str(err.value)
    assert str(path) in text and message in text
    assert text.split(str(path))[1].startswith(":")  # file:line


def test_bad_agency_table_names_file_and_line(tmp_path: Path) -> None:
    old, new = "Suku Dinas Bina Marga {kota}", "Suku Dinas Bina Marga {city}"
    path = _copy_tables(tmp_path, edit_agencies=lambda t: t.replace(old, new))
    with pytest.raises(RoutingTableError, match=r"agencies\.v2\.csv:\d+: regional_unit"):
        load_router(path)
