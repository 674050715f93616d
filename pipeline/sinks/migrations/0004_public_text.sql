-- The citizen's text as public views (Open311, dashboards, exports) may show it: contact details and
-- the reporter's own name masked by the worker (envelope 1.1, triage.public_text). The original text
-- stays in text_original for officers.
ALTER TABLE reports ADD COLUMN text_public text;
-- Public readers get the masked text like the other columns they may see.
GRANT SELECT (text_public) ON reports TO crm_api;
