"""Property-based tests (hypothesis) for every parser: whatever arrives, the parser returns or refuses
with a reason (``Rejected`` with a non-empty reason and a 4xx status, or the error type its runner
documents); no other exception escapes. The checks live in ``fuzz/targets.py``, shared with the
atheris fuzz targets.
"""

from __future__ import annotations

import base64
import json
import string
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import targets
from pipeline.sources.desk import FORMULA_PREFIXES, neutralise_cell

PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _desk_scratch_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The desk CSV target's scratch file goes where pytest cleans up, not into /tmp."""
    before = targets._TMP
    targets._TMP = tmp_path_factory.mktemp("desk") / before.name
    yield
    targets._TMP = before


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "0812 3456 7890",
            "+6281234567890",
            "a@example.com",
            "-6.2",
            "106.8",
            "https://example.com/a.jpg",
            "2024-05-01T08:00:00+07:00",
            "=cmd|' /C calc'!A0",
            "\r\nBcc: x@example.com",
            "'; DROP TABLE reports; --",
            "\x00",
            "9" * 30,
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def objects(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects mostly made of the fields the parser knows, with arbitrary values."""
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=10), json_values, max_size=len(keys) + 2)


def as_json(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    # stdlib json: big integers and NaN are written as they come (the parser must refuse them with a reason).
    return strategy.map(
        lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")
    ) | st.binary(max_size=300)


WEB_KEYS = [
    "text",
    "laporan",
    "isi_laporan",
    "nama",
    "email",
    "surel",
    "phone",
    "no_hp",
    "alamat",
    "lat",
    "lon",
    "lng",
    "latitude",
    "longitude",
    "kategori",
    "private",
    "anonim",
    "foto",
    "attachments",
    "submission_id",
]
JAKI_KEYS = [
    "report_id",
    "id",
    "text",
    "description",
    "category",
    "lat",
    "lon",
    "location",
    "photo_urls",
    "account_id",
    "private",
    "created_at",
    "address",
]
DESK_KEYS = [
    "entry_id",
    "officer",
    "text",
    "name",
    "phone",
    "email",
    "address",
    "category",
    "taken_at",
    "private",
    "office_code",
]
GW_KEYS = ["id", "from", "to", "text", "parts", "received_at", "media"]


@PROFILE
@given(as_json(objects(WEB_KEYS)))
def test_web_form_json(body: bytes) -> None:
    targets.web(body)


@PROFILE
@given(
    st.lists(st.tuples(st.sampled_from(WEB_KEYS), st.text(max_size=60)), max_size=8).map(
        lambda pairs: urlencode(pairs).encode()
    )
    | st.binary(max_size=200)
)
def test_web_form_urlencoded(body: bytes) -> None:
    targets.push(targets.WEB, body, targets.FORM)


def test_web_attachment_url_past_the_envelope_limit_is_refused_not_a_crash() -> None:
    # is_url() let a 2001-2008 character URL through (its pattern counts from after the scheme): the
    # envelope's ValidationError escaped the web form's parser
    from pipeline.sources.base import InboundRequest, Rejected

    body = json.dumps({"text": "Lampu PJU mati di Jl. Pramuka", "attachments": ["https://" + "a" * 1995]})
    request = InboundRequest("POST", targets.WEB.route, {"Content-Type": targets.JSON}, {}, body.encode())
    with pytest.raises(Rejected) as exc:
        targets.WEB.parse(request)
    assert (exc.value.status, exc.value.code, exc.value.field) == (400, "bad_attachments", "attachments")


@PROFILE
@given(as_json(objects(JAKI_KEYS)))
def test_jaki(body: bytes) -> None:
    targets.jaki(body)


meta_events = st.fixed_dictionaries(
    {},
    optional={
        "field": st.sampled_from(["feed", "comments", "mentions", "live_comments", "ratings"]) | json_values,
        "value": st.dictionaries(
            st.sampled_from(
                [
                    "item",
                    "verb",
                    "comment_id",
                    "post_id",
                    "parent_id",
                    "message",
                    "from",
                    "id",
                    "text",
                    "created_time",
                    "photos",
                    "photo",
                    "media",
                    "media_id",
                ]
            ),
            json_values | st.sampled_from(["comment", "add", "post", "photo"]),
            max_size=8,
        ),
        "message": st.dictionaries(
            st.sampled_from(["mid", "text", "is_echo", "attachments", "reply_to"]), json_values, max_size=5
        ),
        "sender": st.dictionaries(st.sampled_from(["id"]), json_values, max_size=1),
        "timestamp": json_values,
    },
)
meta_bodies = st.fixed_dictionaries(
    {"object": st.sampled_from(["page", "instagram", "user"]) | json_values},
    optional={
        "entry": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": json_values,
                    "time": json_values,
                    "changes": st.lists(meta_events, max_size=3) | json_values,
                    "messaging": st.lists(meta_events, max_size=3) | json_values,
                },
            )
            | json_values,
            max_size=3,
        )
        | json_values
    },
)


@PROFILE
@given(as_json(meta_bodies))
def test_meta_webhooks(body: bytes) -> None:
    targets.meta(body)


@PROFILE
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "MessageSid",
                "SmsSid",
                "From",
                "Body",
                "NumMedia",
                "MediaUrl0",
                "MediaContentType0",
                "NumSegments",
            ]
        ),
        st.text(max_size=40),
        max_size=8,
    ).map(lambda d: urlencode(d).encode())
    | st.binary(max_size=200)
)
def test_sms_twilio_forms(body: bytes) -> None:
    targets.sms_twilio(body)


parts = st.lists(
    st.dictionaries(
        st.sampled_from(["ref", "part", "total", "text"]), json_values | st.integers(-2, 25), max_size=4
    ),
    max_size=5,
)


@PROFILE
@given(as_json(objects(GW_KEYS) | st.fixed_dictionaries({"id": scalars, "from": scalars, "parts": parts})))
def test_sms_generic_gateway(body: bytes) -> None:
    targets.sms_gateway(body)


@PROFILE
@given(as_json(objects(DESK_KEYS)))
def test_desk_api(body: bytes) -> None:
    targets.desk_api(body)


csv_cells = st.text(alphabet=string.printable + "é,\"'=+-@\t\r\n", max_size=30)


@PROFILE
@given(
    st.lists(
        st.sampled_from(["text", "phone", "name", "email", "entry_id", "officer", "alamat", "x"]),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.lists(csv_cells, max_size=6), max_size=6),
)
def test_desk_csv_files(header: list[str], rows: list[list[str]]) -> None:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    targets.desk_csv(buf.getvalue().encode())


@PROFILE
@given(st.binary(max_size=300))
def test_desk_csv_arbitrary_bytes(data: bytes) -> None:
    targets.desk_csv(data)


@PROFILE
@given(st.text(max_size=40))
def test_formula_cells_are_always_neutralised(cell: str) -> None:
    out = neutralise_cell(cell)
    assert not out.startswith(FORMULA_PREFIXES)
    assert out.endswith(cell)


header_values = st.text(max_size=60) | st.sampled_from(
    [
        "=?utf-8?b?" + base64.b64encode(b"a\r\nBcc: v@example.com").decode() + "?=",
        "<>",
        "<a@b>",
        "\x00",
        "=?bogus?q?x?=",
        "Ani <ani@example.com>",
        '"\\" <@>',
        "a@b, c@d",
        "<a@b> <c@d>",
    ]
)


@PROFILE
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "From",
                "To",
                "Subject",
                "Message-ID",
                "In-Reply-To",
                "References",
                "Date",
                "Reply-To",
                "Content-Type",
                "Content-Transfer-Encoding",
                "Auto-Submitted",
            ]
        ),
        header_values,
        max_size=9,
    ),
    st.binary(max_size=200),
)
def test_mime_messages(headers: dict[str, str], body: bytes) -> None:
    head = "".join(f"{k}: {v.replace(chr(13), ' ').replace(chr(10), ' ')}\r\n" for k, v in headers.items())
    targets.email(head.encode("utf-8", "surrogateescape") + b"\r\n" + body)


@PROFILE
@given(st.binary(max_size=400))
def test_mime_arbitrary_bytes(data: bytes) -> None:
    targets.email(data)


x_items = st.dictionaries(
    st.sampled_from(
        [
            "id",
            "text",
            "author_id",
            "sender_id",
            "created_at",
            "event_type",
            "referenced_tweets",
            "attachments",
        ]
    ),
    json_values | st.sampled_from(["123", "2024-05-01T08:00:00Z", "not a date"]),
    max_size=8,
)


@PROFILE
@given(
    as_json(
        st.fixed_dictionaries(
            {},
            optional={
                "data": st.lists(x_items | json_values, max_size=4) | json_values,
                "includes": st.fixed_dictionaries(
                    {},
                    optional={
                        "users": st.lists(json_values, max_size=3) | json_values,
                        "media": st.lists(json_values, max_size=3),
                    },
                )
                | json_values,
                "meta": json_values,
            },
        )
    )
)
def test_x_api_pages(body: bytes) -> None:
    targets.twitter(body)


lapor_items = st.dictionaries(
    st.sampled_from(
        [
            "id",
            "title",
            "content",
            "category",
            "location",
            "latitude",
            "longitude",
            "created_at",
            "updated_at",
            "is_anonymous",
            "is_confidential",
            "reporter",
            "attachments",
        ]
    ),
    json_values | st.sampled_from(["2024-03-02T10:00:00+07:00", "2024-03-02 10:00"]),
    max_size=10,
)


@PROFILE
@given(
    as_json(
        st.fixed_dictionaries(
            {},
            optional={
                "data": st.lists(lapor_items | json_values, max_size=4) | json_values,
                "meta": json_values,
            },
        )
    )
)
def test_lapor_pages(body: bytes) -> None:
    targets.lapor(body)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_seeds_pass_their_target(name: str) -> None:
    for seed in targets.SEEDS[name]:
        targets.TARGETS[name](seed)
