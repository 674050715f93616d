"""The model registry and the labels, in the CRM store (tables of migration 0005).

A model is an artifact with an id, what it was trained on, its held-out metrics and its calibration
(:class:`~pipeline.processors.trained.TrainedClassifier`). Its ``role`` says what workers do with it:
``live`` routes reports, ``shadow`` decides beside it on the same batches without being acted on,
``candidate`` waits, ``retired`` stood down. Workers poll :meth:`ModelRegistry.roles` and swap between
batches, so promoting needs no restart and loses no report; the model a promotion replaced is kept
(``replaced``) and :meth:`ModelRegistry.rollback` puts it back.

Labels are officers' routing decisions (re-route, dispatch from triage, confirm): the store records
them as the status service and the officer API apply them (:func:`record_label`);
:meth:`ModelRegistry.training_rows` reads reports with their final agencies for ``train --from-store``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ..envelope import Region
from ..processors.classify import Signals
from ..processors.trained import TrainedClassifier, loads_model

#: statuses at which the agency holding a report has accepted it (an implicit confirmation)
ACCEPTED_STATUSES = ("Proses", "Menunggu Validasi", "Selesai")


class RegistryError(ValueError):
    """A registry action that cannot be done (unknown model, nothing to roll back to, ...)."""


@dataclass(frozen=True)
class Decision:
    report_id: str
    model_id: str
    role: str  # live | shadow
    label: str | None
    agency: str | None  # the agency the model named, routed or not
    confidence: float | None
    routed_to: str


@dataclass(frozen=True)
class TrainingRow:
    report_id: str
    signals: Signals
    agency: str
    source: str  # label kind (reroute, dispatch, confirm) or 'accepted'


def summary_of(
    model: TrainedClassifier, target_precisions: tuple[float, ...] = (0.9, 0.95, 0.98)
) -> dict[str, Any]:
    """What the registry shows of a model: its training data, held-out metrics and thresholds."""
    meta = dict(model.meta)
    cal = model.calibration
    thresholds = {}
    if cal is not None:
        for p in target_precisions:
            t = cal.threshold_for(p)
            thresholds[f"{p:.2f}"] = {"threshold": t, "coverage": cal.coverage_at(t)}
    meta["thresholds"] = thresholds
    meta["labels"] = model.labels
    return meta


def label_kind(old_agency: str | None, new_agency: str) -> str:
    """What an officer's routing says about the classifier's decision."""
    if old_agency is None:
        return "dispatch"  # it waited in triage
    return "confirm" if old_agency == new_agency else "reroute"  # same agency, another office: confirmed


def record_label(
    cur: psycopg.Cursor[Any] | Any,
    *,
    report_id: str,
    event_id: str,
    kind: str,
    old_agency: str | None,
    new_agency: str,
    classifier: str | None,
    actor: str,
    at: datetime | None = None,
) -> Any:
    """Insert one label (idempotent on ``event_id``); works with sync and async cursors alike."""
    return cur.execute(
        "INSERT INTO route_labels (report_id, event_id, kind, old_agency, new_agency, classifier, actor, "
        "labelled_at) VALUES (%s, %s, %s, %s, %s, %s, %s, COALESCE(%s, now())) "
        "ON CONFLICT (event_id) DO NOTHING",
        (report_id, event_id, kind, old_agency, new_agency, classifier, actor, at),
    )


class ModelRegistry:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.dsn, row_factory=dict_row)

    # ------------------------------------------------------------------ models
    def register(self, model: TrainedClassifier, actor: str = "cli") -> str:
        data = model.dumps()
        with self._connect() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO triage_models (model_id, created_by, summary, artifact, artifact_sha256) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (model_id) DO NOTHING",
                (model.model_id, actor, Jsonb(summary_of(model)), data, hashlib.sha256(data).hexdigest()),
            )
            self._event(conn, model.model_id, "register", actor)
        return model.model_id

    def list(self) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return conn.execute(
                "SELECT model_id, role, created_at, created_by, shadow_since, live_since, replaced, "
                "summary->'cv' AS cv, summary->'n_examples' AS n_examples, summary->'sources' AS sources "
                "FROM triage_models ORDER BY created_at DESC"
            ).fetchall()

    def get(self, model_id: str) -> dict[str, Any]:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT model_id, role, created_at, created_by, shadow_since, live_since, replaced, summary, "
                "artifact_sha256, length(artifact) AS artifact_bytes FROM triage_models WHERE model_id = %s",
                (model_id,),
            ).fetchone()
            if row is None:
                raise RegistryError(f"no model {model_id!r} in the registry (crm-pipeline model list)")
            row["events"] = conn.execute(
                "SELECT action, actor, at FROM triage_model_events WHERE model_id = %s ORDER BY event_id",
                (model_id,),
            ).fetchall()
            return row

    def load(self, model_id: str) -> TrainedClassifier:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT artifact, artifact_sha256 FROM triage_models WHERE model_id = %s", (model_id,)
            ).fetchone()
        if row is None:
            raise RegistryError(f"no model {model_id!r} in the registry")
        data = bytes(row["artifact"])
        if hashlib.sha256(data).hexdigest() != row["artifact_sha256"]:
            raise RegistryError(f"model {model_id!r}: artifact does not match its checksum")
        return loads_model(data, f"registry model {model_id}")

    def roles(self) -> tuple[str | None, str | None]:
        """(live model id, shadow model id): what every worker polls."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT model_id, role FROM triage_models WHERE role IN ('live', 'shadow')"
            ).fetchall()
        by_role = {r["role"]: r["model_id"] for r in rows}
        return by_role.get("live"), by_role.get("shadow")

    def _lock(self, conn: psycopg.Connection[Any], model_id: str) -> dict[str, Any]:
        conn.execute("LOCK TABLE triage_models IN SHARE ROW EXCLUSIVE MODE")
        row = conn.execute(
            "SELECT model_id, role FROM triage_models WHERE model_id = %s", (model_id,)
        ).fetchone()
        if row is None:
            raise RegistryError(f"no model {model_id!r} in the registry (crm-pipeline model list)")
        return row

    def _event(self, conn: psycopg.Connection[Any], model_id: str, action: str, actor: str) -> None:
        conn.execute(
            "INSERT INTO triage_model_events (model_id, action, actor) VALUES (%s, %s, %s)",
            (model_id, action, actor),
        )

    def shadow(self, model_id: str, actor: str = "cli") -> None:
        """Run ``model_id`` beside the live model (the previous shadow, if any, stands down)."""
        with self._connect() as conn, conn.transaction():
            row = self._lock(conn, model_id)
            if row["role"] == "live":
                raise RegistryError(f"{model_id} is the live model; shadow another one to compare with it")
            conn.execute(
                "UPDATE triage_models SET role = 'candidate', shadow_since = NULL "
                "WHERE role = 'shadow' AND model_id <> %s",
                (model_id,),
            )
            conn.execute(
                "UPDATE triage_models SET role = 'shadow', shadow_since = now() WHERE model_id = %s",
                (model_id,),
            )
            self._event(conn, model_id, "shadow", actor)

    def unshadow(self, actor: str = "cli") -> str | None:
        with self._connect() as conn, conn.transaction():
            row = conn.execute(
                "UPDATE triage_models SET role = 'candidate' WHERE role = 'shadow' RETURNING model_id"
            ).fetchone()
            if row:
                self._event(conn, row["model_id"], "unshadow", actor)
            return row["model_id"] if row else None

    def promote(self, model_id: str, actor: str = "cli", action: str = "promote") -> str | None:
        """Make ``model_id`` the live model; returns the model it replaced (kept for rollback)."""
        with self._connect() as conn, conn.transaction():
            row = self._lock(conn, model_id)
            if row["role"] == "live":
                raise RegistryError(f"{model_id} is already the live model")
            old = conn.execute("SELECT model_id FROM triage_models WHERE role = 'live'").fetchone()
            previous = old["model_id"] if old else None
            conn.execute("UPDATE triage_models SET role = 'retired' WHERE role = 'live'")
            conn.execute(
                "UPDATE triage_models SET role = 'live', live_since = now(), shadow_since = NULL, "
                "replaced = CASE WHEN %s = 'rollback' THEN replaced ELSE %s END WHERE model_id = %s",
                (action, previous, model_id),
            )
            self._event(conn, model_id, action, actor)
            return previous

    def rollback(self, actor: str = "cli") -> tuple[str | None, str]:
        """Put back what the live model replaced (a registered model, or the built-in lexicon when it
        replaced none); returns (restored model or None for the lexicon, stood down)."""
        with self._connect() as conn:
            live = conn.execute("SELECT model_id, replaced FROM triage_models WHERE role = 'live'").fetchone()
        if live is None:
            raise RegistryError("no live model: the built-in lexicon classifier is routing already")
        if not live["replaced"]:
            self.retire(actor, action="rollback")
            return None, live["model_id"]
        self.promote(live["replaced"], actor, action="rollback")
        with self._connect() as conn:
            self._event(conn, live["model_id"], "rollback", actor)
        return live["replaced"], live["model_id"]

    def retire(self, actor: str = "cli", action: str = "retire") -> str | None:
        """Stand the live model down: workers go back to the built-in lexicon classifier."""
        with self._connect() as conn, conn.transaction():
            row = conn.execute(
                "UPDATE triage_models SET role = 'retired' WHERE role = 'live' RETURNING model_id"
            ).fetchone()
            if row:
                self._event(conn, row["model_id"], action, actor)
            return row["model_id"] if row else None

    # ------------------------------------------------------------------ decisions and labels
    def training_rows(self, since: datetime | None = None, labelled_only: bool = False) -> list[TrainingRow]:
        """Stored reports with their final agencies: the latest officer label, else (unless
        ``labelled_only``) the agency that accepted the report (status Proses or later)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT r.report_id, r.text_normalised, r.category_hint, r.channel, r.region, r.agency, "
                "r.status, l.new_agency AS label_agency, l.kind AS label_kind "
                "FROM reports r LEFT JOIN LATERAL (SELECT new_agency, kind FROM route_labels x "
                "  WHERE x.report_id = r.report_id ORDER BY labelled_at DESC, label_id DESC LIMIT 1) l "
                "ON true "
                "WHERE r.text_normalised IS NOT NULL AND r.text_normalised <> '' "
                "AND (%s::timestamptz IS NULL OR r.received_at >= %s) "
                "AND (l.new_agency IS NOT NULL OR (NOT %s AND r.agency IS NOT NULL AND r.status = ANY(%s)))",
                (since, since, labelled_only, list(ACCEPTED_STATUSES)),
            ).fetchall()
        out = []
        for r in rows:
            region = Region(**r["region"]) if r["region"] else None
            agency = r["label_agency"] or r["agency"]
            out.append(
                TrainingRow(
                    str(r["report_id"]),
                    Signals(r["text_normalised"], r["category_hint"], r["channel"], region),
                    agency,
                    r["label_kind"] or "accepted",
                )
            )
        return out

    def compare(
        self,
        shadow_id: str | None = None,
        live_id: str | None = None,
        since: datetime | None = None,
        whole: bool = False,
    ) -> dict[str, Any]:
        """Since the shadow started (its latest ``shadow``; ``since`` or ``whole`` to say otherwise):
        agreement with the live model, and the accuracy and coverage of both against officers' final
        agencies (labels, or the agency that accepted the report). A model shadowed again after a
        retraining or a week off is judged on its new run, not on what it decided before."""
        with self._connect() as conn:
            if shadow_id is None:
                row = (
                    conn.execute("SELECT model_id FROM triage_models WHERE role = 'shadow'").fetchone()
                    or conn.execute(
                        "SELECT model_id FROM model_decisions WHERE role = 'shadow' "
                        "ORDER BY decided_at DESC LIMIT 1"
                    ).fetchone()
                )
                if row is None:
                    raise RegistryError(
                        "no shadow model has decided anything yet (crm-pipeline model shadow ID)"
                    )
                shadow_id = row["model_id"]
            if since is None and not whole:
                began = conn.execute(
                    "SELECT max(at) AS at FROM triage_model_events WHERE model_id = %s AND action = 'shadow'",
                    (shadow_id,),
                ).fetchone()
                since = began["at"] if began else None
            rows = conn.execute(
                "SELECT l.model_id AS live_id, l.agency AS live_agency, l.routed_to AS live_routed, "
                "s.agency AS shadow_agency, s.routed_to AS shadow_routed, "
                "COALESCE(lab.new_agency, CASE WHEN r.status = ANY(%s) THEN r.agency END) AS final_agency "
                "FROM model_decisions s "
                "JOIN model_decisions l ON l.report_id = s.report_id AND l.role = 'live' "
                "JOIN reports r ON r.report_id = s.report_id "
                "LEFT JOIN LATERAL (SELECT new_agency FROM route_labels x WHERE x.report_id = s.report_id "
                "  ORDER BY labelled_at DESC, label_id DESC LIMIT 1) lab ON true "
                "WHERE s.model_id = %s AND s.role = 'shadow' AND (%s::text IS NULL OR l.model_id = %s) "
                "AND (%s::timestamptz IS NULL OR s.decided_at >= %s)",
                (list(ACCEPTED_STATUSES), shadow_id, live_id, live_id, since, since),
            ).fetchall()
        n = len(rows)

        def side(prefix: str) -> dict[str, Any]:
            labelled = [r for r in rows if r["final_agency"]]
            right = sum(1 for r in labelled if r[f"{prefix}_agency"] == r["final_agency"])
            routed = [r for r in rows if r[f"{prefix}_routed"] == "agency"]
            routed_labelled = [r for r in routed if r["final_agency"]]
            routed_right = sum(1 for r in routed_labelled if r[f"{prefix}_agency"] == r["final_agency"])
            return {
                "accuracy": right / len(labelled) if labelled else None,
                "coverage": len(routed) / n if n else None,
                "precision_routed": routed_right / len(routed_labelled) if routed_labelled else None,
                "labelled": len(labelled),
            }

        live_ids = sorted({r["live_id"] for r in rows})
        return {
            "shadow": shadow_id,
            "since": since.isoformat() if since else None,
            "live": live_ids,
            "decisions": n,
            "agreement": sum(1 for r in rows if r["live_agency"] == r["shadow_agency"]) / n if n else None,
            "live_model": side("live"),
            "shadow_model": side("shadow"),
        }


async def record_decisions(conn: psycopg.AsyncConnection[Any], decisions: list[Decision]) -> None:
    """The worker's half: the live and shadow decisions of a batch (idempotent on report and model)."""
    if not decisions:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO model_decisions (report_id, model_id, role, label, agency, confidence, routed_to) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (report_id, model_id) DO NOTHING",
            [
                (d.report_id, d.model_id, d.role, d.label, d.agency, d.confidence, d.routed_to)
                for d in decisions
            ],
        )
