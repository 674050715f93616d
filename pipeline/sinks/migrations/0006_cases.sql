-- Cases that end and recur, and officers' corrections of grouping kept as labelled pairs (issue #23;
-- docs/runbook.md, "Cases"). Case corrections are apart from the classifier's route labels (#16).

-- A case closes when every report of it is Selesai or TL Ditolak (closed_reason says which), or when
-- an officer merges it into another (closed_reason 'merged', merged_into). Grouping also stops joining a
-- case 30 days after its first report; the next report of the problem opens a case whose
-- previous_case_id is this one, with occurrence one more. candidates: open cases grouping flagged as
-- perhaps the same problem.
ALTER TABLE cases
    ADD COLUMN IF NOT EXISTS occurrence       integer NOT NULL DEFAULT 1 CHECK (occurrence >= 1),
    ADD COLUMN IF NOT EXISTS previous_case_id text,
    ADD COLUMN IF NOT EXISTS candidates       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS closed_at        timestamptz,
    ADD COLUMN IF NOT EXISTS closed_reason    text,
    ADD COLUMN IF NOT EXISTS merged_into      text;
CREATE INDEX IF NOT EXISTS cases_previous_idx ON cases (previous_case_id) WHERE previous_case_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS cases_first_at_idx ON cases (first_at);

-- One row per officer correction: 'split' moved report_id out of case_id into other_case_id (a new case);
-- 'merge' moved every report of other_case_id into case_id. event_id makes a retried request a replay.
CREATE TABLE IF NOT EXISTS case_corrections (
    correction_id  bigserial PRIMARY KEY,
    event_id       text NOT NULL UNIQUE,
    kind           text NOT NULL CHECK (kind IN ('split', 'merge')),
    case_id        text NOT NULL,
    other_case_id  text NOT NULL,
    report_id      uuid,
    actor          text NOT NULL,
    note           text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS case_corrections_created_idx ON case_corrections (created_at);

-- What a correction says about pairs of reports: label 1 the same problem (a merge), 0 not (a split),
-- and whether grouping had put them in one case before. The same form as bench/data/grouping_labels.csv,
-- with report ids (the store holds the reports anyway).
CREATE TABLE IF NOT EXISTS case_pair_labels (
    correction_id    bigint NOT NULL REFERENCES case_corrections (correction_id) ON DELETE CASCADE,
    report_a         uuid NOT NULL,
    report_b         uuid NOT NULL,
    label            smallint NOT NULL CHECK (label IN (0, 1)),
    grouped_together boolean NOT NULL,
    PRIMARY KEY (correction_id, report_a, report_b)
);

GRANT SELECT ON case_corrections, case_pair_labels TO crm_api;
