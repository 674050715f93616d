"""The CRM's way back: what happens to a report after it is stored, and what the citizen hears of it.

status.py          the status lifecycle: statuses, allowed transitions, the status event/change records
status_service.py  applies status events (officer API, Kafka consumer) in one transaction with the outbox
status_cli.py      ``crm-pipeline status``: the status-event consumer
api.py             the officer API; serves Open311 GeoReport v2 (``pipeline/open311/``) too
notify/            the notification outbox and one sender per way back (``crm-pipeline notify``)
"""
