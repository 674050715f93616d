"""The model registry and labels in the real CRM store (PostgreSQL): roles, promotion history, rollback,
training rows and the comparison of a shadow with the live model. A database of its own: the session's
shared store has a running worker that must not start routing with these test models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from pipeline.learning.registry import Decision, ModelRegistry, RegistryError, record_decisions, record_label
from pipeline.processors.classify import Signals
from pipeline.processors.trained import TrainedClassifier, train
from pipeline.sinks.postgres import migrate
from tests import harness
from tests.crm_helpers import REGION, make_report, store

TEXTS = {
    "Dinas Bina Marga": [
        "jalan berlubang",
        "aspal rusak",
        "trotoar amblas",
        "jalan retak",
        "lubang di jalan",
    ],
    "Dinas Perhubungan": ["parkir liar", "lampu merah mati", "angkot ngetem", "rambu hilang", "macet parah"],
}


@pytest.fixture(scope="module")
def db(stack: None) -> Iterator[harness.Isolated]:
    iso = harness.Isolated()
    iso.create_database()
    asyncio.run(migrate(iso.settings()))
    yield iso
    iso.drop_database()


def small_model() -> TrainedClassifier:
    items = [Signals(t) for texts in TEXTS.values() for t in texts]
    labels = [a for a, texts in TEXTS.items() for _ in texts]
    return train(items, labels, folds=3)


def test_roles_promotion_and_rollback(db: harness.Isolated) -> None:
    reg = ModelRegistry(db.env["CRM_DATABASE_URL"])
    a, b = small_model(), small_model()
    assert a.model_id != b.model_id
    for m in (a, b):
        assert reg.register(m, actor="test") == m.model_id
    assert reg.roles() == (None, None)
    loaded = reg.load(a.model_id)
    assert loaded.classify(["parkir liar di pasar"]) == a.classify(["parkir liar di pasar"])

    reg.shadow(a.model_id)
    assert reg.roles() == (None, a.model_id)
    reg.shadow(b.model_id)  # one shadow at a time: a stands down
    assert reg.roles() == (None, b.model_id)
    assert reg.promote(a.model_id) is None  # replaced the built-in lexicon
    assert reg.promote(b.model_id) == a.model_id  # the shadow is promoted; a is kept for rollback
    assert reg.roles() == (b.model_id, None)
    with pytest.raises(RegistryError, match="is the live model"):
        reg.shadow(b.model_id)
    with pytest.raises(RegistryError, match="already the live model"):
        reg.promote(b.model_id)
    with pytest.raises(RegistryError, match="no model 'nope'"):
        reg.promote("nope")

    assert reg.rollback() == (a.model_id, b.model_id)
    assert reg.roles() == (a.model_id, None)
    assert reg.rollback() == (None, a.model_id)  # a replaced nothing: back to the lexicon
    assert reg.roles() == (None, None)
    with pytest.raises(RegistryError, match="lexicon classifier is routing already"):
        reg.rollback()
    actions = [e["action"] for e in reg.get(b.model_id)["events"]]
    assert actions == ["register", "shadow", "promote", "rollback"]
    summary = reg.get(a.model_id)["summary"]
    assert summary["n_examples"] == 10 and set(summary["thresholds"]) == {"0.90", "0.95", "0.98"}


def test_a_tampered_artifact_is_refused(db: harness.Isolated) -> None:
    reg = ModelRegistry(db.env["CRM_DATABASE_URL"])
    m = small_model()
    reg.register(m)
    db.query(
        "UPDATE triage_models SET artifact = artifact || '\\x00'::bytea WHERE model_id = %s RETURNING 1",
        (m.model_id,),
    )
    with pytest.raises(RegistryError, match="does not match its checksum"):
        reg.load(m.model_id)


def test_training_rows_take_the_officers_last_word_or_the_accepting_agency(db: harness.Isolated) -> None:
    settings = db.settings()
    relabelled = make_report(text="pungli oleh juru parkir di pasar", agency="Dinas Perhubungan")
    accepted = make_report(text="jalan berlubang di depan sekolah", agency="Dinas Bina Marga")
    waiting = make_report(text="ada sesuatu yang aneh", agency="Dinas Bina Marga")  # Menunggu: no verdict yet
    asyncio.run(store(settings, relabelled, accepted, waiting))
    db.query("UPDATE reports SET status = 'Proses' WHERE report_id = %s RETURNING 1", (accepted.report_id,))
    with psycopg.connect(db.env["CRM_DATABASE_URL"], autocommit=True) as conn:
        for n, new in enumerate(["Kelurahan", "Satuan Polisi Pamong Praja"]):
            record_label(
                conn.cursor(),
                report_id=relabelled.report_id,
                event_id=f"e{n}",
                kind="reroute",
                old_agency="Dinas Perhubungan",
                new_agency=new,
                classifier="lexicon-v1",
                actor="admin",
            )
    rows = {r.report_id: r for r in ModelRegistry(db.env["CRM_DATABASE_URL"]).training_rows()}
    assert rows[relabelled.report_id].agency == "Satuan Polisi Pamong Praja"  # the latest label
    assert rows[relabelled.report_id].source == "reroute"
    assert (rows[accepted.report_id].agency, rows[accepted.report_id].source) == (
        "Dinas Bina Marga",
        "accepted",
    )
    assert waiting.report_id not in rows
    assert rows[accepted.report_id].signals.region == REGION  # the place comes back for place features
    only = ModelRegistry(db.env["CRM_DATABASE_URL"]).training_rows(labelled_only=True)
    assert [r.report_id for r in only] == [relabelled.report_id]


def test_compare_scores_both_models_against_officers(db: harness.Isolated) -> None:
    reg = ModelRegistry(db.env["CRM_DATABASE_URL"])
    reports = [make_report(text=f"laporan nomor {i}", agency="Dinas Bina Marga") for i in range(4)]
    asyncio.run(store(db.settings(), *reports))
    decisions = []
    for i, r in enumerate(reports):
        decisions.append(Decision(r.report_id, "live-m", "live", "x", "Dinas Bina Marga", 0.9, "agency"))
        shadow_agency = "Dinas Bina Marga" if i < 2 else "Dinas Perhubungan"
        decisions.append(
            Decision(r.report_id, "shadow-m", "shadow", "x", shadow_agency, 0.8, "agency" if i else "triage")
        )

    async def write() -> None:
        async with await psycopg.AsyncConnection.connect(db.env["CRM_DATABASE_URL"], autocommit=True) as conn:
            await record_decisions(conn, decisions)
            await record_decisions(conn, decisions)  # a redelivered batch changes nothing

    asyncio.run(write())
    with psycopg.connect(db.env["CRM_DATABASE_URL"], autocommit=True) as conn:
        for i, r in enumerate(reports[2:], start=2):  # officers moved the last two to Dishub
            record_label(
                conn.cursor(),
                report_id=r.report_id,
                event_id=f"cmp{i}",
                kind="reroute",
                old_agency="Dinas Bina Marga",
                new_agency="Dinas Perhubungan",
                classifier="live-m",
                actor="a",
            )
        record_label(
            conn.cursor(),
            report_id=reports[0].report_id,
            event_id="cmp0",
            kind="confirm",
            old_agency="Dinas Bina Marga",
            new_agency="Dinas Bina Marga",
            classifier="live-m",
            actor="a",
        )
    out = reg.compare("shadow-m")
    assert (out["decisions"], out["agreement"], out["live"]) == (4, 0.5, ["live-m"])
    assert out["live_model"]["accuracy"] == pytest.approx(1 / 3) and out["live_model"]["labelled"] == 3
    assert out["shadow_model"]["accuracy"] == 1.0 and out["shadow_model"]["coverage"] == 0.75
    assert out["live_model"]["coverage"] == 1.0 and out["shadow_model"]["precision_routed"] == 1.0


def test_compare_and_the_dashboard_judge_a_shadow_on_its_latest_run(db: harness.Isolated) -> None:
    """A model shadowed again (after a week off, say) is compared on what it decided since, unless asked
    for every run: its earlier decisions say nothing about the data it sees now."""
    import os
    import subprocess
    import sys

    import orjson

    from pipeline.dashboard.models import model_rows

    reg = ModelRegistry(db.env["CRM_DATABASE_URL"])
    m = small_model()
    reg.register(m, actor="test")
    reports = [make_report(text=f"laporan ke {i}", agency="Dinas Bina Marga") for i in range(5)]
    asyncio.run(store(db.settings(), *reports))

    def decide(batch) -> None:
        decisions = [
            d
            for r in batch
            for d in (
                Decision(r.report_id, "live-x", "live", "x", "Dinas Bina Marga", 0.9, "agency"),
                Decision(r.report_id, m.model_id, "shadow", "x", "Dinas Perhubungan", 0.9, "agency"),
            )
        ]

        async def write() -> None:
            url = db.env["CRM_DATABASE_URL"]
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await record_decisions(conn, decisions)

        asyncio.run(write())

    reg.shadow(m.model_id)
    decide(reports[:3])
    with psycopg.connect(db.env["CRM_DATABASE_URL"], autocommit=True) as conn:  # that run was a week ago
        conn.execute(
            "UPDATE model_decisions SET decided_at = decided_at - interval '7 days' WHERE model_id = %s",
            (m.model_id,),
        )
        conn.execute(
            "UPDATE triage_model_events SET at = at - interval '7 days' WHERE model_id = %s", (m.model_id,)
        )
    reg.unshadow()
    reg.shadow(m.model_id)  # shadowed again today
    decide(reports[3:])

    latest = reg.compare(m.model_id)
    assert latest["decisions"] == 2 and latest["since"] is not None
    assert reg.compare(m.model_id, whole=True)["decisions"] == 5
    cli = [sys.executable, "-m", "pipeline", "model", "compare", m.model_id, "--json"]
    env = {**os.environ, **db.env}
    for extra, n in (([], 2), (["--all"], 5), (["--since", "30d"], 5), (["--since", "1d"], 2)):
        out = subprocess.run(
            cli + extra, env=env, capture_output=True, text=True, check=True, cwd=harness.ROOT
        )
        assert orjson.loads(out.stdout)["decisions"] == n, (extra, out.stdout)

    async def board() -> dict:
        async with await psycopg.AsyncConnection.connect(db.env["CRM_DATABASE_URL"]) as conn:
            return await model_rows(conn)

    shadow = asyncio.run(board())["shadow"]
    assert shadow["model"] == m.model_id and shadow["decisions"] == 2 and shadow["agreement"] == 0.0
    reg.unshadow()
