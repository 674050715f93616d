"""The stack half of the conformance kit runs when a pipeline with this package installed is reachable:

    CRM_CONFORMANCE_INGRESS_URL=http://127.0.0.1:8080 CRM_KAFKA_BOOTSTRAP=127.0.0.1:19092 \
    CRM_TOPIC_NAMESPACE=crm pytest examples/whatsapp_channel/tests

Without those variables only the offline checks run.
"""

from __future__ import annotations

import os

import pytest

from pipeline.sources.conformance import Target


@pytest.fixture(scope="session")
def conformance_target() -> Target:
    url = os.environ.get("CRM_CONFORMANCE_INGRESS_URL")
    if not url:
        pytest.skip("set CRM_CONFORMANCE_INGRESS_URL to run the conformance kit against a live pipeline")
    return Target(
        url,
        os.environ.get("CRM_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
        os.environ.get("CRM_TOPIC_NAMESPACE", "crm"),
    )
