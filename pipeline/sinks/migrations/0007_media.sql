-- Issue #21: report media kept in the object store. One object per distinct photo (content-addressed
-- by the sha256 of the original bytes); one row per attachment of a report, with its fetch state.
CREATE TABLE media_objects (
    sha256         text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    media_type     text        NOT NULL,
    size           bigint      NOT NULL,
    width          integer     NOT NULL,
    height         integer     NOT NULL,
    original_key   text        NOT NULL,  -- EXIF included: roles that may read contacts only
    public_key     text        NOT NULL,  -- re-encoded without metadata: Open311, agencies
    public_type    text        NOT NULL,
    thumb_key      text        NOT NULL,
    had_exif       boolean     NOT NULL DEFAULT false,
    stored_at      timestamptz NOT NULL DEFAULT now()
);

-- kind 'citizen': the report's own attachments (idx = position in the envelope's attachments);
-- kind 'after': photos an officer adds with a status change (idx in upload order).
-- Deleted with the report (ON DELETE CASCADE); `crm-pipeline media gc` then deletes the objects no
-- row references any more (docs/runbook.md, "Media retention").
CREATE TABLE report_media (
    report_id        uuid        NOT NULL REFERENCES reports (report_id) ON DELETE CASCADE,
    kind             text        NOT NULL DEFAULT 'citizen' CHECK (kind IN ('citizen', 'after')),
    idx              integer     NOT NULL CHECK (idx >= 0),
    channel          text        NOT NULL,
    source_url       text        NOT NULL,
    name             text,
    declared_type    text,
    state            text        NOT NULL DEFAULT 'pending'
                                 CHECK (state IN ('pending', 'stored', 'refused', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    reason           text,
    code             text,
    sha256           text REFERENCES media_objects (sha256),
    gps_lat          double precision,
    gps_lon          double precision,
    actor            text,
    status_event_id  text,          -- the status change an "after" photo belongs to
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (report_id, kind, idx)
);
CREATE INDEX report_media_due_idx ON report_media (next_attempt_at) WHERE state = 'pending';
CREATE INDEX report_media_problem_idx ON report_media (updated_at DESC) WHERE state IN ('refused', 'failed');
CREATE INDEX report_media_sha_idx ON report_media (sha256);

-- The read API (crm_api) sees what was stored and why something was not, not the source URLs (they
-- can carry a provider's signature).
GRANT SELECT ON media_objects TO crm_api;
GRANT SELECT (report_id, kind, idx, channel, name, declared_type, state, attempts, reason, code, sha256,
              gps_lat, gps_lon, actor, status_event_id, created_at, updated_at)
    ON report_media TO crm_api;
