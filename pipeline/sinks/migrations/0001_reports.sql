-- The CRM store, version 1: reports as accepted by the pipeline, and reporter contacts kept apart.
CREATE TABLE reports (
    report_id        uuid PRIMARY KEY,
    channel          text        NOT NULL,
    provider_id      text        NOT NULL,
    schema_version   text        NOT NULL,
    received_at      timestamptz NOT NULL,
    source_at        timestamptz,
    reporter_id      text        NOT NULL,
    private          boolean     NOT NULL DEFAULT false,
    text_original    text        NOT NULL,
    text_normalised  text,
    category_hint    text,
    lat              double precision,
    lon              double precision,
    address          text,
    desk_office      text,
    attachments      jsonb       NOT NULL DEFAULT '[]'::jsonb,
    raw_ref          jsonb,
    in_reply_to      text,
    category         text,
    confidence       real,
    classifier       text,
    kota_code        text,
    kecamatan_code   text,
    kelurahan_code   text,
    region           jsonb,
    agency           text,
    agency_unit      text,
    routed_to        text,
    route_reason     text,
    case_id          text,
    expected_by      timestamptz,
    status           text        NOT NULL DEFAULT 'Menunggu',
    stored_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reports_channel_provider_id_key UNIQUE (channel, provider_id)
);

CREATE INDEX reports_received_at_idx ON reports (received_at DESC);
CREATE INDEX reports_agency_status_idx ON reports (agency, status);
CREATE INDEX reports_kelurahan_idx ON reports (kelurahan_code);

-- Contact details live apart from the report so that routed views and exports never join them by
-- accident; only the notification path reads this table.
CREATE TABLE reporter_contacts (
    report_id    uuid PRIMARY KEY REFERENCES reports (report_id) ON DELETE CASCADE,
    reporter_id  text NOT NULL,
    name         text,
    email        text,
    phone        text,
    handle       text,
    stored_at    timestamptz NOT NULL DEFAULT now()
);
