-- The CRM store, version 2: tracking numbers, cases, assignments, status history, escalations, the
-- notification outbox, and database roles that keep reporter contacts to the notification path.

-- Every accepted report gets a tracking number the citizen can quote (JKT-00000001, …).
CREATE SEQUENCE tracking_number_seq;
ALTER TABLE reports
    ADD COLUMN tracking_number   text,
    ADD COLUMN status_changed_at timestamptz,
    ADD COLUMN updated_at        timestamptz NOT NULL DEFAULT now();
UPDATE reports SET tracking_number = 'JKT-' || lpad(nextval('tracking_number_seq')::text, 8, '0')
    WHERE tracking_number IS NULL;
ALTER TABLE reports
    ALTER COLUMN tracking_number SET DEFAULT 'JKT-' || lpad(nextval('tracking_number_seq')::text, 8, '0'),
    ALTER COLUMN tracking_number SET NOT NULL,
    ADD CONSTRAINT reports_tracking_number_key UNIQUE (tracking_number);

-- Open311 queries: by agency/status/time, by service (category), by region, by case.
CREATE INDEX reports_agency_received_idx ON reports (agency, received_at DESC);
CREATE INDEX reports_status_received_idx ON reports (status, received_at DESC);
CREATE INDEX reports_category_received_idx ON reports (category, received_at DESC);
CREATE INDEX reports_kota_received_idx ON reports (kota_code, received_at DESC);
CREATE INDEX reports_case_idx ON reports (case_id) WHERE case_id IS NOT NULL;
CREATE INDEX reports_open_expected_idx ON reports (expected_by)
    WHERE status NOT IN ('Selesai', 'TL Ditolak');

-- Cases: reports grouped as one problem; support_count = reports in the case ("me too").
CREATE TABLE cases (
    case_id          text PRIMARY KEY,
    category         text,
    kelurahan_code   text,
    first_report_id  uuid NOT NULL,
    first_at         timestamptz NOT NULL,
    last_at          timestamptz NOT NULL,
    support_count    integer NOT NULL DEFAULT 1 CHECK (support_count >= 1),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cases_kelurahan_idx ON cases (kelurahan_code, last_at DESC);

-- Assignments: which agency / unit holds a report, since when and why. One active row per report.
CREATE TABLE assignments (
    assignment_id    bigserial PRIMARY KEY,
    report_id        uuid NOT NULL REFERENCES reports (report_id) ON DELETE CASCADE,
    event_id         text NOT NULL UNIQUE,           -- 'intake:<report>' or the status event's id
    agency           text NOT NULL,
    agency_unit      text,
    reason           text,
    assigned_by      text NOT NULL,
    assigned_at      timestamptz NOT NULL DEFAULT now(),
    active           boolean NOT NULL DEFAULT true
);
CREATE UNIQUE INDEX assignments_one_active_idx ON assignments (report_id) WHERE active;
CREATE INDEX assignments_agency_idx ON assignments (agency, assigned_at DESC) WHERE active;

-- Status history: who, when, from → to, note. event_id makes every change idempotent.
CREATE TABLE status_history (
    history_id       bigserial PRIMARY KEY,
    report_id        uuid NOT NULL REFERENCES reports (report_id) ON DELETE CASCADE,
    event_id         text NOT NULL UNIQUE,
    from_status      text,
    to_status        text NOT NULL,
    actor            text NOT NULL,
    note             text,
    agency           text,
    agency_unit      text,
    changed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX status_history_report_idx ON status_history (report_id, changed_at);

-- Escalations: one per report and due date; published_at set once it is on the escalation topic.
CREATE TABLE escalations (
    report_id        uuid NOT NULL REFERENCES reports (report_id) ON DELETE CASCADE,
    expected_by      timestamptz NOT NULL,
    status           text NOT NULL,
    agency           text,
    raised_at        timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,
    PRIMARY KEY (report_id, expected_by)
);
CREATE INDEX escalations_unpublished_idx ON escalations (raised_at) WHERE published_at IS NULL;

-- The notification outbox lives in its own schema; only the notifier role touches it and the contacts.
CREATE SCHEMA notify;
CREATE TABLE notify.outbox (
    outbox_id        bigserial PRIMARY KEY,
    report_id        uuid NOT NULL REFERENCES reports (report_id) ON DELETE CASCADE,
    event_key        text NOT NULL,                  -- 'ack' or 'status:<event id>'
    channel          text NOT NULL,
    destination      text NOT NULL,                  -- email, sms, twitter, meta, desk, none
    kind             text NOT NULL,                  -- ack, status
    to_status        text,
    body             text NOT NULL,                  -- the message, never a contact detail
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'sent', 'failed', 'desk', 'delivered', 'skipped')),
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    provider_ref     text,                           -- id the channel gave the sent message
    desk_office      text,
    CONSTRAINT outbox_report_event_key UNIQUE (report_id, event_key)
);
CREATE INDEX outbox_due_idx ON notify.outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_desk_idx ON notify.outbox (desk_office, created_at) WHERE state = 'desk';

-- Backoff per destination: a relay or gateway that is down is not hammered by every row.
CREATE TABLE notify.destinations (
    destination      text PRIMARY KEY,
    failures         integer NOT NULL DEFAULT 0,
    paused_until     timestamptz,
    last_error       text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Roles (cluster-wide, created once). Login users of each process are granted one of them; processes
-- also SET ROLE to it, so a bug in the API cannot read a contact even through the owner's login.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_notifier') THEN
        CREATE ROLE crm_notifier NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_api') THEN
        CREATE ROLE crm_api NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

REVOKE ALL ON reporter_contacts FROM PUBLIC;
REVOKE ALL ON SCHEMA notify FROM PUBLIC;
GRANT USAGE ON SCHEMA notify TO crm_notifier;
GRANT SELECT ON reporter_contacts TO crm_notifier;
GRANT SELECT, INSERT, UPDATE ON notify.outbox, notify.destinations TO crm_notifier;
GRANT USAGE ON SEQUENCE notify.outbox_outbox_id_seq TO crm_notifier;
GRANT SELECT (report_id, channel, provider_id, in_reply_to, private, tracking_number, status, desk_office)
    ON reports TO crm_notifier;

-- The read API sees reports without reporter identity or provider ids, and never the contacts.
GRANT SELECT (report_id, tracking_number, channel, received_at, text_original, text_normalised,
              category, lat, lon, address, kota_code, kecamatan_code, kelurahan_code, region, agency,
              agency_unit, routed_to, case_id, expected_by, status, status_changed_at, updated_at,
              attachments, private)
    ON reports TO crm_api;
GRANT SELECT ON cases, assignments TO crm_api;
GRANT SELECT (history_id, report_id, from_status, to_status, note, agency, agency_unit, changed_at)
    ON status_history TO crm_api;
-- Desk officers list what they must tell walk-in reporters: message rows only, no contact columns.
GRANT USAGE ON SCHEMA notify TO crm_api;
GRANT SELECT (outbox_id, report_id, channel, kind, to_status, body, state, created_at, desk_office)
    ON notify.outbox TO crm_api;
