"""Open311 GeoReport v2 for integrators: formats, keys, tokens, service definitions and routes.

The write path is a channel like any other (``pipeline/sources/open311.py``: ``POST requests.json|xml``
becomes a report on the ``open311`` ingest topic); this package holds what both the ingress and the
consumer API need to speak the protocol: JSON and XML bodies, error lists, API keys and their scopes,
the tokens an asynchronous server answers with, and the service definitions.
"""

JURISDICTION = "jakarta.go.id"
