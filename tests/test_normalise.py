"""Normalisation of informal Indonesian complaint text, and masking of personal data."""

from __future__ import annotations

import pytest

from pipeline.processors.normalise import CRM_ABBREVIATIONS, affixed_forms, clean, mask_pii, normalise


def test_clean_resolves_entities_tags_repeats_and_whitespace() -> None:
    assert clean("Parkir  liaaaar &amp;amp; <b>macet</b>\n\n!!!!") == "Parkir liaar & macet !!"


def test_clean_never_shortens_digit_runs() -> None:
    assert clean("Rp 2.000.000 dan 10000 unit") == "Rp 2.000.000 dan 10000 unit"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mhn TL pju mati", "mohon tindak lanjut penerangan jalan umum mati"),
        ("PKL di JPO", "pedagang kaki lima di jembatan penyeberangan orang"),
        ("jln rusak di gg. 5", "jalan rusak di gang 5"),
        ("Jl. Mawar", "jalan mawar"),
        ("yg blm dtg dgn sdh tdk", "yang belum datang dengan sudah tidak"),
        ("kel. kalibaru kec. cilincing", "kelurahan kalibaru kecamatan cilincing"),
        ("lalin macet", "lalu lintas macet"),
    ],
)
def test_crm_abbreviations_and_slang_are_expanded(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


def test_crm_abbreviations_override_general_slang_table() -> None:
    # indoNLP's table reads "gg" as "enggak" and "kel" as "keluarga"; in a complaint they are places.
    assert CRM_ABBREVIATIONS["gg"] == "gang"
    assert normalise("gg buntu").startswith("gang")
    assert normalise("kel menteng") == "kelurahan menteng"


def test_elongated_words_and_reduplication() -> None:
    assert normalise("parkirrr liaaarrr bangeeet") == "parkir liar banget"
    assert normalise("tiang2 listrik, pohon-pohon") == "tiang listrik pohon"


def test_jakarta_in_suffix_becomes_kan() -> None:
    assert normalise("tolong dibersihin") == "tolong dibersihkan"


def test_normalise_masks_contacts_first() -> None:
    out = normalise("Hub saya 0812-3456-7890 atau budi@contoh.id")
    assert "0812" not in out and "budi" not in out
    assert "[telepon]" in out and "[email]" in out


@pytest.mark.parametrize(
    "phone",
    ["+62 812-3456-7890", "+6281234567890", "6281234567890", "0812 3456 7890", "08123456789", "(021) 5551234",
     "021-555-1234", "+62 21 5551 234"],
)  # fmt: skip
def test_mask_pii_phone_numbers(phone: str) -> None:
    masked = mask_pii(f"WA ke {phone} ya")
    assert masked == "WA ke [telepon] ya"


@pytest.mark.parametrize("nik", ["3171012345678901", "3171 0123 4567 8901", "317101 234567 8901"])
def test_mask_pii_nik(nik: str) -> None:
    assert mask_pii(f"NIK {nik}, KTP hilang") == "NIK [nik], KTP hilang"


def test_mask_pii_email_keeps_the_rest() -> None:
    assert mask_pii("Kirim ke siti.aminah+crm@mail.co.id &amp; tunggu") == "Kirim ke [email] & tunggu"


@pytest.mark.parametrize(
    "text",
    ["Rp 2.000.000", "tahun 2023", "RT 012 RW 002 no 30", "sudah 3 hari", "tgl 30/01/2023", "jam 08.00"],
)
def test_mask_pii_leaves_ordinary_numbers(text: str) -> None:
    assert mask_pii(text) == text


def test_affixed_forms_cover_indonesian_morphology() -> None:
    assert {"menumpuk", "tertumpuk", "tumpukan"} <= affixed_forms("tumpuk")
    assert {"pemangkasan", "dipangkas", "memangkas"} <= affixed_forms("pangkas")
    assert {"penertiban", "ditertibkan"} <= affixed_forms("tertib")
    assert {"kebisingan"} <= affixed_forms("bising")
    assert "menyapu" in affixed_forms("sapu")
