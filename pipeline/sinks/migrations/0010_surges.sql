-- Surges (issue #17): the latest state of every surge the worker raised on <ns>.alerts.v1, every
-- change of it, and the agencies' notifications in the same outbox the citizens' go through.
CREATE TABLE surges (
    surge_id         uuid PRIMARY KEY,
    seq              integer NOT NULL,               -- the highest change stored
    state            text NOT NULL CHECK (state IN ('opened', 'growing', 'subsiding', 'closed')),
    category         text NOT NULL,
    level            text NOT NULL,                  -- kelurahan, kecamatan or kota
    kota_code        text NOT NULL,
    kecamatan_code   text,
    kelurahan_code   text,
    place            text,                           -- the place's name
    opened_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    closed_at        timestamptz,
    count            integer NOT NULL,
    expected         double precision NOT NULL,
    score            double precision NOT NULL,
    report_count     integer NOT NULL,
    record           jsonb NOT NULL                  -- the latest alert record as published
);
CREATE INDEX surges_open_idx ON surges (updated_at DESC) WHERE state <> 'closed';
CREATE INDEX surges_opened_idx ON surges (opened_at DESC);

CREATE TABLE surge_changes (
    surge_id         uuid NOT NULL REFERENCES surges (surge_id) ON DELETE CASCADE,
    seq              integer NOT NULL,
    state            text NOT NULL,
    at               timestamptz NOT NULL,
    record           jsonb NOT NULL,
    stored_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (surge_id, seq)                      -- a record published twice is stored once
);

-- An agency's notification names the surge and the agency instead of a report. One per surge, agency
-- and change: a record consumed twice never queues a second message.
ALTER TABLE notify.outbox
    ALTER COLUMN report_id DROP NOT NULL,
    ADD COLUMN surge_id uuid REFERENCES surges (surge_id) ON DELETE CASCADE,
    ADD COLUMN agency text,
    ADD CONSTRAINT outbox_report_or_surge CHECK ((report_id IS NULL) <> (surge_id IS NULL));
CREATE UNIQUE INDEX outbox_surge_agency_event_key ON notify.outbox (surge_id, agency, event_key)
    WHERE surge_id IS NOT NULL;

GRANT SELECT ON surges, surge_changes TO crm_api;
GRANT SELECT (surge_id, category, level, kota_code, kecamatan_code, kelurahan_code, place, state, record)
    ON surges TO crm_notifier;
GRANT SELECT (surge_id, agency) ON notify.outbox TO crm_api;
