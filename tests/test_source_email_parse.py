"""The e-mail adapter's parser alone: what the stdlib cannot read is the sender's fault, what our own
code raises is not."""

from __future__ import annotations

import pytest

from pipeline.settings import Settings
from pipeline.sources import email as email_source
from pipeline.sources.base import Rejected

GOOD = (
    b"From: Ani <ani@example.com>\r\nTo: dki@jakarta.go.id\r\nSubject: Jalan rusak\r\n"
    b"Message-ID: <1@example.com>\r\n\r\nJalan berlubang di depan sekolah.\r\n"
)


def _source() -> email_source.EmailGatewaySource:
    return email_source.EmailGatewaySource(Settings())


def test_a_header_the_stdlib_raises_on_is_a_malformed_message():
    # CPython 3.11's Message-ID parser raised UnboundLocalError on an empty domain literal (fuzzing)
    with pytest.raises(Rejected) as refused:
        _source().parse(b"From: Ai <ani@example.co\nMessage-ID: <1@[\n\r\nJalaex", None)
    assert refused.value.code == "malformed_mime" and "unreadable" in refused.value.reason


def test_an_error_of_the_adapters_own_code_is_not_blamed_on_the_message(monkeypatch):
    assert "Jalan berlubang" in _source().parse(GOOD, "ani@example.com").report.text

    def broken(_: object) -> list[tuple[str, str]]:
        raise TypeError("a bug of ours")

    monkeypatch.setattr(email_source, "getaddresses", broken)
    # raised as it is: the gateway dead-letters it as adapter_error and logs the traceback
    with pytest.raises(TypeError, match="a bug of ours"):
        _source().parse(GOOD, "ani@example.com")
