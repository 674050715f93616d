"""Telling the citizen: an outbox in PostgreSQL and one sender per channel.

Every notification is one row of ``notify.outbox`` with a unique key per (report, event), written in
the same transaction as what caused it (the report's intake, a status change), so nothing is
announced that did not happen and nothing is sent twice. ``crm-pipeline notify`` runs
:class:`~pipeline.notify.outbox.OutboxRunner`, which sends due rows on the channel the report came
from and retries with backoff per row and per destination (now, +5 min, then every 30 min).
"""
