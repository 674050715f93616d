"""The reporter's own name never reaches public views, even when the citizen signs the text."""

from __future__ import annotations

import orjson

from pipeline.envelope import Contact, Report, Reporter
from pipeline.processors.chain import TriageChain
from pipeline.processors.normalise import mask_names
from pipeline.settings import Settings
from pipeline.worker import Stages

SIGNED = "Lampu PJU mati di Jl. Pramuka sudah seminggu.\nTerima kasih,\nDewi Lestari\nKel. Utan Kayu Utara"


def test_full_name_and_capitalised_parts_are_masked_but_common_words_are_not():
    assert mask_names(SIGNED, ["Dewi Lestari"]).endswith("Terima kasih,\n[nama]\nKel. Utan Kayu Utara")
    assert mask_names("saya DEWI dari RT 03", ["Dewi Lestari"]) == "saya [nama] dari RT 03"
    assert (
        mask_names("sari roti dijual, Sari ikut lapor", ["Sari Wulandari"])
        == "sari roti dijual, [nama] ikut lapor"
    )
    assert mask_names("dewi  lestari melapor", ["Dewi Lestari"]) == "[nama] melapor"
    assert mask_names("tanpa nama", [None, ""]) == "tanpa nama"


def test_public_text_normalised_text_and_routed_projection_carry_no_name():
    report = Report.create(
        channel="email",
        provider_id="m-1@example.com",
        reporter=Reporter(id="rp-1"),
        contact=Contact(name="Dewi Lestari", email="dewi@example.com"),
        text=SIGNED + " hp 081299990000",
    )
    [triaged] = TriageChain().process([report])
    assert "Dewi" not in triaged.triage.public_text and "[nama]" in triaged.triage.public_text
    assert "dewi" not in triaged.triage.normalised_text.lower()
    assert "081299990000" not in triaged.triage.public_text
    assert triaged.text == report.text  # the original stays for officers
    for _topic, _key, value in Stages(Settings(env="test")).routed_records(triaged):
        assert b"Dewi" not in value and b"dewi" not in value.lower(), orjson.loads(value)


def test_one_dump_serves_both_topics_byte_for_byte():
    """The worker dumps a report once for the normalised and the routed topics (issue #19): the
    bytes are those of ``dumps()`` and of the public projection made on its own, contacts and a
    private reporter included."""
    reports = [
        Report.create(
            channel="email",
            provider_id=f"m-{i}@example.com",
            reporter=Reporter(id=f"rp-{i}", private=i % 2 == 1),
            contact=Contact(name="Dewi Lestari", email="dewi@example.com") if i < 2 else None,
            text=text,
        )
        for i, text in enumerate([SIGNED, "pohon tumbang di jl. pramuka", "banjir 50 cm di kel. utan kayu"])
    ]
    stages = Stages(Settings(env="test"))
    for triaged in TriageChain().process(reports):
        records = stages.records_of(triaged)
        key = triaged.report_id.encode()
        assert records[0] == (stages.topics.normalised, key, triaged.dumps())
        assert records[1:] == stages.routed_records(triaged)  # dumped on its own
        assert all(b"dewi@example.com" not in value for _, _, value in records[1:])
        # the internal topic keeps the contact
        assert (b"dewi@example.com" in records[0][2]) == (triaged.contact is not None)
