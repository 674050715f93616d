"""Operating the pipeline (issue #7): consumer lag, dead letters, replay, backfill, the process runner,
worker telemetry (/metrics, /healthz, /readyz) and health checks. Each module is used by ``crm-pipeline``.
"""
