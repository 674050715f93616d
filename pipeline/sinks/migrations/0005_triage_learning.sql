-- The CRM store, version 5: triage that learns (issue #16). Officers' routing decisions become labels,
-- classifier models are versioned artifacts with a role, and a shadow model's decisions are kept beside
-- the live model's so the two can be compared against what officers decided.

-- A label: an officer re-routed a report (disposisi to another agency), dispatched one that waited in
-- triage, or confirmed the pipeline's route. event_id makes each label idempotent (the status event's
-- id, or 'confirm:<report>:<agency>').
CREATE TABLE route_labels (
    label_id       bigserial PRIMARY KEY,
    report_id      uuid NOT NULL REFERENCES reports (report_id) ON DELETE CASCADE,
    event_id       text NOT NULL UNIQUE,
    kind           text NOT NULL CHECK (kind IN ('reroute', 'dispatch', 'confirm')),
    old_agency     text,
    new_agency     text NOT NULL,
    classifier     text,                 -- the model whose decision the officer judged
    actor          text NOT NULL,
    labelled_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX route_labels_report_idx ON route_labels (report_id, labelled_at DESC);
CREATE INDEX route_labels_time_idx ON route_labels (labelled_at);

-- Models: the artifact (joblib, format crm-triage-model v2) with what it was trained on, its held-out
-- metrics and calibration summary. role: candidate (registered), shadow (decides alongside, acted on by
-- nobody), live (routes), retired. At most one live and one shadow.
CREATE TABLE triage_models (
    model_id       text PRIMARY KEY,
    role           text NOT NULL DEFAULT 'candidate'
                   CHECK (role IN ('candidate', 'shadow', 'live', 'retired')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text,
    summary        jsonb NOT NULL,        -- training data, labels, cross-validated metrics, thresholds
    artifact       bytea NOT NULL,
    artifact_sha256 text NOT NULL,
    shadow_since   timestamptz,
    live_since     timestamptz,
    replaced       text                   -- the live model this one replaced (rollback goes back to it)
);
CREATE UNIQUE INDEX triage_models_one_live ON triage_models ((true)) WHERE role = 'live';
CREATE UNIQUE INDEX triage_models_one_shadow ON triage_models ((true)) WHERE role = 'shadow';

-- Every promotion, shadowing and rollback, for the record (and so workers can tell what changed).
CREATE TABLE triage_model_events (
    event_id       bigserial PRIMARY KEY,
    model_id       text NOT NULL REFERENCES triage_models (model_id),
    action         text NOT NULL,        -- register, shadow, unshadow, promote, rollback
    actor          text,
    at             timestamptz NOT NULL DEFAULT now()
);

-- Decisions of the live and the shadow model on the same reports, while a shadow runs.
CREATE TABLE model_decisions (
    report_id      uuid NOT NULL,
    model_id       text NOT NULL,
    role           text NOT NULL CHECK (role IN ('live', 'shadow')),
    label          text,
    agency         text,
    confidence     real,
    routed_to      text NOT NULL,
    decided_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (report_id, model_id)
);
CREATE INDEX model_decisions_model_idx ON model_decisions (model_id, decided_at);

GRANT SELECT ON triage_models, triage_model_events, model_decisions, route_labels TO crm_api;
REVOKE SELECT ON triage_models FROM crm_api;
GRANT SELECT (model_id, role, created_at, created_by, summary, shadow_since, live_since, replaced)
    ON triage_models TO crm_api;
