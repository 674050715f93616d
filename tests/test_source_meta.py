"""``facebook`` and ``governor_social`` (Meta webhooks): handshake, X-Hub-Signature-256, batched entries."""

from __future__ import annotations

import time

import orjson
import pytest

from pipeline.settings import Settings
from pipeline.sources.base import InboundRequest, Rejected
from pipeline.sources.conformance import HttpCall, PushConformance, Target
from pipeline.sources.meta import FacebookPageSource, GovernorSocialSource, sign

SETTINGS = Settings(env="test")
FB = FacebookPageSource(SETTINGS)
GOV = GovernorSocialSource(SETTINGS)
FB_SECRET = SETTINGS.facebook_app_secret.get_secret_value()
GOV_SECRET = SETTINGS.governor_social_app_secret.get_secret_value()
PAGE_ID = "104857600000001"


def _post(
    src, payload: dict | bytes, secret: str | None = None, signature: str | None = None
) -> InboundRequest:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    elif secret is not None:
        headers["x-hub-signature-256"] = sign(secret, body)  # header names are case-insensitive
    return InboundRequest("POST", src.route, headers, {}, body)


def feed_comment(comment_id: str, text: str, sender: str = "2001", when: int | None = None) -> dict:
    return {
        "field": "feed",
        "value": {
            "item": "comment",
            "verb": "add",
            "comment_id": comment_id,
            "post_id": f"{PAGE_ID}_77",
            "parent_id": f"{PAGE_ID}_77",
            "message": text,
            "from": {"id": sender, "name": "Budi Santoso"},
            "created_time": when or int(time.time()),
        },
    }


def messenger(mid: str, text: str, sender: str = "5550001") -> dict:
    now = int(time.time() * 1000)
    return {
        "sender": {"id": sender},
        "recipient": {"id": PAGE_ID},
        "timestamp": now,
        "message": {"mid": mid, "text": text},
    }


def page_webhook(*, changes=(), messaging=(), when: int | None = None) -> dict:
    entry: dict = {"id": PAGE_ID, "time": when or int(time.time())}
    if changes:
        entry["changes"] = list(changes)
    if messaging:
        entry["messaging"] = list(messaging)
    return {"object": "page", "entry": [entry]}


# --- handshake -------------------------------------------------------------------------------------------


def _get(src, **query: str) -> InboundRequest:
    return InboundRequest("GET", src.route, {}, query, b"")


def test_verification_handshake_echoes_the_challenge():
    token = SETTINGS.facebook_verify_token.get_secret_value()
    q = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "1158201444"}
    assert FB.handshake(_get(FB, **q)) == (200, "1158201444")


def test_handshake_refuses_a_wrong_token_and_each_channel_has_its_own():
    fb_token = SETTINGS.facebook_verify_token.get_secret_value()
    assert (
        FB.handshake(_get(FB, **{"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "1"}))[0]
        == 403
    )
    q = {"hub.mode": "subscribe", "hub.verify_token": fb_token, "hub.challenge": "1"}
    assert GOV.handshake(_get(GOV, **q))[0] == 403
    assert FB.handshake(_get(FB, **{"hub.verify_token": fb_token, "hub.challenge": "1"}))[0] == 400
    assert FB.handshake(_get(FB, **{**q, "hub.challenge": "<script>"}))[0] == 400


# --- signature -------------------------------------------------------------------------------------------


def test_missing_signature_is_401_and_a_wrong_one_403():
    payload = page_webhook(changes=[feed_comment("77_1", "Jalan rusak di Jl. Daan Mogot")])
    with pytest.raises(Rejected) as exc:
        FB.authenticate(_post(FB, payload))
    assert exc.value.status == 401
    for bad in (sign("not-the-secret", orjson.dumps(payload)), "sha256=", "sha1=abc", sign(GOV_SECRET, b"x")):
        with pytest.raises(Rejected) as exc:
            FB.authenticate(_post(FB, payload, signature=bad))
        assert exc.value.status == 403 and exc.value.code == "bad_signature"
    FB.authenticate(_post(FB, payload, FB_SECRET))
    with pytest.raises(Rejected):  # the other channel's secret does not open this one
        GOV.authenticate(_post(GOV, payload, FB_SECRET))


def test_a_body_changed_after_signing_is_refused():
    body = orjson.dumps(page_webhook(changes=[feed_comment("77_1", "Jalan rusak")]))
    req = InboundRequest(
        "POST", FB.route, {"X-Hub-Signature-256": sign(FB_SECRET, body)}, {}, body.replace(b"rusak", b"bagus")
    )
    with pytest.raises(Rejected) as exc:
        FB.authenticate(req)
    assert exc.value.status == 403


def test_entries_older_than_the_replay_window_are_refused():
    old = int(time.time()) - SETTINGS.meta_replay_window_s - 60
    payload = page_webhook(changes=[feed_comment("77_9", "Banjir di Kampung Melayu", when=old)], when=old)
    with pytest.raises(Rejected) as exc:
        FB.authenticate(_post(FB, payload, FB_SECRET))
    assert exc.value.status == 403 and exc.value.code == "replayed"


# --- parsing ---------------------------------------------------------------------------------------------


def test_one_post_with_several_entries_and_changes_gives_one_report_each():
    payload = page_webhook(
        changes=[
            feed_comment("77_1", "Lampu jalan mati di Jl. Salemba Raya"),
            feed_comment("77_2", "Parkir liar depan Pasar Senen", sender="2002"),
            {
                "field": "feed",
                "value": {"item": "reaction", "verb": "add", "reaction_type": "like", "from": {"id": "2003"}},
            },
            {
                "field": "feed",
                "value": {"item": "comment", "verb": "edited", "comment_id": "77_1", "message": "ralat"},
            },
            feed_comment("77_3", "Terima kasih laporannya", sender=PAGE_ID),  # the page replying
        ],
        messaging=[
            messenger("m_abc", "Sampah belum diangkut 3 hari di Gg. Kenari"),
            {
                "sender": {"id": "5550001"},
                "recipient": {"id": PAGE_ID},
                "timestamp": 1,
                "delivery": {"mids": []},
            },
            {
                "sender": {"id": PAGE_ID},
                "recipient": {"id": "5550001"},
                "timestamp": 1,
                "message": {"mid": "m_echo", "text": "Baik", "is_echo": True},
            },
        ],
    )
    payload["entry"].append(
        page_webhook(changes=[feed_comment("88_1", "Pohon tumbang di Jl. Ampera")])["entry"][0]
    )
    result = FB.parse(_post(FB, payload, FB_SECRET))
    assert [r.provider_id for r in result.reports] == ["77_1", "77_2", "m_abc", "88_1"]
    assert result.status == 200 and result.response["accepted"] == 4 and result.response["ignored"] == 5
    first = result.reports[0]
    assert first.channel == "facebook" and first.contact.name == "Budi Santoso"
    assert first.reporter.id.startswith("rp-") and first.in_reply_to == f"{PAGE_ID}_77"
    assert result.reports[2].source_at is not None


def test_same_comment_redelivered_is_the_same_report_and_duplicates_in_one_post_count_once():
    payload = page_webhook(changes=[feed_comment("77_1", "Jalan rusak"), feed_comment("77_1", "Jalan rusak")])
    a = FB.parse(_post(FB, payload, FB_SECRET))
    b = FB.parse(_post(FB, payload, FB_SECRET))
    assert len(a.reports) == 1 and a.reports[0].report_id == b.reports[0].report_id


def test_messenger_attachments_become_references():
    event = messenger("m_photo", "")
    event["message"]["attachments"] = [
        {"type": "image", "payload": {"url": "https://scontent.xx.fbcdn.net/p.jpg"}}
    ]
    [r] = FB.parse(_post(FB, page_webhook(messaging=[event]), FB_SECRET)).reports
    assert r.attachments[0].url.endswith("p.jpg") and r.attachments[0].media_type == "image"


def test_governor_social_takes_instagram_comments_facebook_does_not():
    payload = {
        "object": "instagram",
        "entry": [
            {
                "id": "1784",
                "time": int(time.time()),
                "changes": [
                    {
                        "field": "comments",
                        "value": {
                            "id": "17865799348089039",
                            "text": "Pak, jalan di Cilincing rusak parah",
                            "from": {"id": "9001", "username": "warga_cilincing"},
                            "media": {"id": "1799", "media_product_type": "FEED"},
                        },
                    },
                    {
                        "field": "mentions",
                        "value": {"media_id": "1800", "comment_id": "1801"},
                    },  # ids only: ignored
                ],
            }
        ],
    }
    result = GOV.parse(_post(GOV, payload, GOV_SECRET))
    [r] = result.reports
    assert (
        r.channel == "governor_social" and r.contact.handle == "@warga_cilincing" and r.in_reply_to == "1799"
    )
    assert result.response["ignored"] == 1
    with pytest.raises(Rejected) as exc:
        FB.parse(_post(FB, payload, FB_SECRET))
    assert exc.value.code == "unsupported_object"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"[]", "malformed_json"),
        (b"", "empty_body"),
        (orjson.dumps({"object": "page"}), "malformed_webhook"),
        (orjson.dumps({"object": "page", "entry": [{"id": "1", "time": 1}]}), "malformed_webhook"),
        (
            orjson.dumps({"object": "page", "entry": [{"id": "1", "changes": [{"field": "feed"}]}]}),
            "malformed_webhook",
        ),
        (
            orjson.dumps(
                {"object": "page", "entry": [{"id": "1", "messaging": [{"message": {"text": "hi"}}]}]}
            ),
            "malformed_webhook",
        ),
        (orjson.dumps({"object": "user", "entry": []}), "unsupported_object"),
    ],
)
def test_malformed_webhooks_are_refused_with_a_reason(body, code):
    with pytest.raises(Rejected) as exc:
        FB.parse(_post(FB, body, FB_SECRET))
    assert exc.value.code == code and exc.value.status == 400


@pytest.mark.parametrize(
    "when",
    ["\u00b2", "9" * 400, "9" * 5000, "0001-01-01T00:00:00+01:00", "kemarin"],
    ids=["superscript-digit", "huge-number", "past-int-digit-limit", "year-0-in-utc", "not-a-time"],
)
def test_an_unreadable_entry_time_is_refused_400_not_a_crash(when):
    # '²'.isdigit() but int('²') raised ValueError; a 400-digit time overflowed the division by 1000;
    # year 1 at +01:00 overflowed the envelope's UTC conversion. The replay check needs a readable time.
    body = orjson.dumps({"object": "page", "entry": [{"id": PAGE_ID, "time": when, "messaging": []}]})
    with pytest.raises(Rejected) as exc:
        FB.authenticate(_post(FB, body, FB_SECRET))
    assert exc.value.status == 400 and exc.value.code == "bad_timestamp" and exc.value.field == "time"


def test_an_unreadable_message_timestamp_is_refused_not_a_crash():
    event = messenger("m_ts", "Sampah menumpuk")
    event["timestamp"] = "0001-01-01T00:00:00+01:00"
    with pytest.raises(Rejected) as exc:
        FB.parse(_post(FB, page_webhook(messaging=[event]), FB_SECRET))
    assert exc.value.status == 400 and exc.value.code == "bad_timestamp" and exc.value.field == "timestamp"


@pytest.mark.parametrize("attachments", [5, "https://x.example/p.jpg", {"type": "image"}])
def test_messenger_attachments_that_are_not_a_list_are_refused(attachments):
    # an int raised TypeError (not iterable); a string or an object were read as attachments
    event = messenger("m_att", "Sampah menumpuk")
    event["message"]["attachments"] = attachments
    with pytest.raises(Rejected) as exc:
        FB.parse(_post(FB, page_webhook(messaging=[event]), FB_SECRET))
    assert (exc.value.status, exc.value.code, exc.value.field) == (400, "malformed_webhook", "attachments")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e["sender"].update(id="1" * 250), "handle"),  # _id() allows 300, the envelope 200
        (
            lambda e: e["message"].update(
                attachments=[{"type": "t" * 101, "payload": {"url": "https://x.example/p.jpg"}}]
            ),
            "media_type",
        ),
    ],
)
def test_values_past_the_envelope_limits_are_refused_not_a_crash(mutate, field):
    # pydantic's ValidationError escaped the parser (a 500 instead of a 400 with the reason)
    event = messenger("m_long", "Sampah menumpuk")
    mutate(event)
    with pytest.raises(Rejected) as exc:
        FB.parse(_post(FB, page_webhook(messaging=[event]), FB_SECRET))
    assert exc.value.status == 400 and exc.value.code == "too_long" and exc.value.field == field


# --- through the real ingress and Kafka ------------------------------------------------------------------


@pytest.fixture(scope="module")
def conformance_target(iso, pipeline_url) -> Target:
    return Target(pipeline_url, iso.env["CRM_KAFKA_BOOTSTRAP"], iso.tag)


def _signed(route: str, payload: dict | bytes, secret: str) -> HttpCall:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return HttpCall(
        route, body, {"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)}
    )


@pytest.mark.stack
class TestFacebookConformance(PushConformance):
    adapter = FacebookPageSource

    def valid(self, nonce: str, base_url: str) -> HttpCall:
        payload = page_webhook(
            changes=[feed_comment(f"77_{nonce}", f"Jalan rusak di Jl. Daan Mogot {nonce}")],
            messaging=[messenger(f"m_{nonce}", f"Lampu PJU mati di Jl. Pramuka {nonce}")],
        )
        return _signed(self.adapter.route, payload, FB_SECRET)

    def malformed(self, nonce: str, base_url: str) -> HttpCall:
        return _signed(
            self.adapter.route, b'{"object": "page", "entry": [{"id": "' + nonce.encode() + b'"', FB_SECRET
        )

    def forged(self, nonce: str, base_url: str) -> HttpCall:
        return _signed(self.adapter.route, self.valid(nonce, base_url).body, "guessed-secret")


@pytest.mark.stack
class TestGovernorSocialConformance(PushConformance):
    adapter = GovernorSocialSource

    def valid(self, nonce: str, base_url: str) -> HttpCall:
        payload = {
            "object": "instagram",
            "entry": [
                {
                    "id": "1784",
                    "time": int(time.time()),
                    "changes": [
                        {
                            "field": "comments",
                            "value": {
                                "id": f"ig_{nonce}",
                                "text": f"Banjir di Kelapa Gading {nonce}",
                                "from": {"id": "9001", "username": "warga"},
                            },
                        }
                    ],
                }
            ],
        }
        return _signed(self.adapter.route, payload, GOV_SECRET)

    def malformed(self, nonce: str, base_url: str) -> HttpCall:
        return _signed(self.adapter.route, orjson.dumps({"object": "instagram", "nonce": nonce}), GOV_SECRET)

    def forged(self, nonce: str, base_url: str) -> HttpCall:
        # Signed with the *Facebook* app's secret: each channel only trusts its own.
        return _signed(self.adapter.route, self.valid(nonce, base_url).body, FB_SECRET)


@pytest.mark.stack
def test_handshake_and_batched_post_through_the_ingress(conformance_target):
    route = FacebookPageSource.route
    token = SETTINGS.facebook_verify_token.get_secret_value()
    q = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "4242"}
    assert HttpCall(route, method="GET", query=q).send(conformance_target.url) == (200, 4242)  # text "4242"
    assert (
        HttpCall(route, method="GET", query={**q, "hub.verify_token": "no"}).send(conformance_target.url)[0]
        == 403
    )
    nonce = PushConformance.nonce()
    payload = page_webhook(
        changes=[
            feed_comment(f"c1_{nonce}", "Trotoar rusak di Jl. Sudirman"),
            feed_comment(f"c2_{nonce}", "Got mampet di Jl. Tebet Raya"),
        ]
    )
    status, answer = _signed(route, payload, FB_SECRET).send(conformance_target.url)
    assert status == 200 and answer["status"] == "ok" and answer["accepted"] == 2
