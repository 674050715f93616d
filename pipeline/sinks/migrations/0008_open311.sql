-- Open311 (issue #18): an agency's API key also reads its requests' private fields (how a report was
-- routed and with what confidence, the category the citizen picked). Still no reporter identity.
GRANT SELECT (route_reason, confidence, category_hint) ON reports TO crm_api;
