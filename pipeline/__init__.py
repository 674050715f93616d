"""Streaming ingestion pipeline for Jakarta's citizen complaint CRM.

sources/     channel adapters: turn what a channel delivers into canonical envelopes on ingest topics
processors/  pure functions: normalise, dedup, classify, locate, route (the Faust agents only wire them)
sinks/       batch-and-flush writers with idempotent effects (the CRM store in PostgreSQL)
crm/         the way back: status lifecycle, officer/Open311 API, notifications to the citizen
"""

__version__ = "0.1.0"
