-- A way back on every channel (issue #20). Desks acknowledge what they told a walk-in reporter: the
-- row becomes 'delivered' with how (told in person / handed a printout) and by whom. The API marks it,
-- as the crm_api role, which may change only these columns of desk rows (the WHERE of its UPDATE).
ALTER TABLE notify.outbox ADD COLUMN IF NOT EXISTS delivered_how text
    CHECK (delivered_how IN ('delivered', 'printed'));
ALTER TABLE notify.outbox ADD COLUMN IF NOT EXISTS delivered_by text;
GRANT SELECT (sent_at, delivered_how, delivered_by, destination) ON notify.outbox TO crm_api;
GRANT UPDATE (state, sent_at, delivered_how, delivered_by) ON notify.outbox TO crm_api;
-- What could not be delivered is listed (crm-pipeline notify undelivered, the dashboard).
CREATE INDEX IF NOT EXISTS outbox_failed_idx ON notify.outbox (created_at) WHERE state = 'failed';
