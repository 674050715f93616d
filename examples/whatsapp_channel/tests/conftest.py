"""Where this channel's conformance kit finds a running pipeline. Without these variables only the
offline checks run (the rest is skipped, and says why):

    CRM_CONFORMANCE_INGRESS_URL=http://127.0.0.1:8080   an ingress with this package installed
    CRM_KAFKA_BOOTSTRAP=127.0.0.1:19092                 its broker
    CRM_TOPIC_NAMESPACE=crm                             its topic namespace
    CRM_CONFORMANCE_WORKER=0                            no worker behind the ingress (default: one runs)
    CRM_CONFORMANCE_DATABASE_URL=postgresql://…         a migrated store (crm-pipeline store migrate):
                                                        the reply half runs the real outbox on it

    pytest examples/whatsapp_channel/tests
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
        worker=os.environ.get("CRM_CONFORMANCE_WORKER", "1") != "0",
    )


@pytest.fixture(scope="session")
def reply_database() -> str:
    url = os.environ.get("CRM_CONFORMANCE_DATABASE_URL")
    if not url:
        pytest.skip("set CRM_CONFORMANCE_DATABASE_URL (a migrated store) to run the reply half on the outbox")
    return url
