from __future__ import annotations

from pipeline.envelope import Report, Reporter
from pipeline.processors.dedup import split, text_fingerprint


def _r(provider_id: str, text: str = "Lampu PJU mati di Jl. Melati", reporter: str = "rp-a") -> Report:
    return Report.create(channel="sms", provider_id=provider_id, reporter=Reporter(id=reporter), text=text)


def test_seen_report_id_is_a_redelivery():
    a = _r("m1")
    fresh, dups = split([a], seen=[True], fingerprint_owner=[None])
    assert fresh == [] and dups[0].duplicate_of == a.report_id


def test_same_id_twice_in_one_batch_keeps_the_first():
    a, again = _r("m1"), _r("m1")
    fresh, dups = split([a, again], [False, False], [None, None])
    assert fresh == [a] and len(dups) == 1


def test_same_sender_same_text_is_one_report_even_with_new_provider_id():
    a, b = _r("m1", "Lampu  PJU mati di Jl. Melati"), _r("m2", "lampu pju mati di jl. melati")
    fresh, dups = split([a, b], [False, False], [None, None])
    assert fresh == [a] and dups[0].duplicate_of == a.report_id
    # ... and across batches through the remembered fingerprint owner
    fresh, dups = split([b], [False], [a.report_id])
    assert fresh == [] and dups[0].duplicate_of == a.report_id


def test_different_senders_or_anonymous_are_not_merged_by_text():
    a, b = _r("m1", reporter="rp-a"), _r("m2", reporter="rp-b")
    assert split([a, b], [False, False], [None, None])[0] == [a, b]
    anon1, anon2 = _r("m3", reporter="anonymous"), _r("m4", reporter="anonymous")
    assert text_fingerprint(anon1) is None
    assert split([anon1, anon2], [False, False], [None, None])[0] == [anon1, anon2]
