"""Kafka with SASL/SCRAM-SHA-512 over TLS and ACLs, on a broker of this test's own (deploy/stack.sh
``KAFKA_SECURITY=sasl_ssl start kafka`` in ``.stack-sasl``, ports 23092/23093 unless overridden: below
the kernel's ephemeral range, so no client's own end can hold them): the pipeline's clients connect
with the settings alone, wrong credentials and plaintext are refused, and a downstream consumer reads
only the routed topic its ACL names (deploy/kafka/acls.sh, SECURITY.md).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.ops.kafka import read_to_end
from pipeline.publish import Publisher, make_producer
from pipeline.security import kafka_client_kwargs
from pipeline.settings import Settings
from pipeline.topics import Topics, TopicSpec, ensure_topics
from tests.harness import Isolated, Process, free_port, wait_http, wait_until

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
SEC_ENV = {
    "STACK_DIR": os.environ.get("CRM_SASL_STACK_DIR", str(ROOT / ".stack-sasl")),
    "KAFKA_PORT": os.environ.get("CRM_SASL_KAFKA_PORT", "23092"),
    "KAFKA_CONTROLLER_PORT": os.environ.get("CRM_SASL_KAFKA_CONTROLLER_PORT", "23093"),
    "KAFKA_SECURITY": "sasl_ssl",
}


def sec_stack(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "deploy" / "stack.sh"), *args],
        env={**os.environ, **SEC_ENV},
        capture_output=True,
        text=True,
        check=check,
        timeout=240,
    )


def acls(*args: str) -> None:
    env = {
        **os.environ,
        "BOOTSTRAP": f"127.0.0.1:{SEC_ENV['KAFKA_PORT']}",
        "ADMIN_CONFIG": f"{SEC_ENV['STACK_DIR']}/kafka/admin.properties",
    }
    subprocess.run(
        [str(ROOT / "deploy" / "kafka" / "acls.sh"), *args],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def secured(stack: None) -> Iterator[dict[str, str]]:
    started = False
    if sec_stack("status", "kafka", check=False).returncode != 0:
        sec_stack("start", "kafka")
        started = True
    tag = "s" + uuid.uuid4().hex[:8]
    env = dict(line.split("=", 1) for line in sec_stack("env").stdout.splitlines() if "=" in line)
    # Redis and PostgreSQL stay the shared plaintext stack's (only Kafka is secured here).
    iso = Isolated()
    env.update({k: v for k, v in iso.env.items() if not k.startswith("CRM_KAFKA")})
    env.update({"CRM_TOPIC_NAMESPACE": tag, "CRM_WORKER_APP_ID": f"crm-pipeline-{tag}"})
    acls("pipeline", tag, "crm")
    agency_user, agency_pw = f"agency-{tag}", "agency-pw-" + uuid.uuid4().hex
    acls("user", agency_user, agency_pw)
    topics = Topics(tag)
    allowed, denied = topics.routed_agency("Dinas Bina Marga"), topics.routed_agency("Dinas Sumber Daya Air")
    acls("consumer", tag, agency_user, allowed)
    iso.create_database()
    try:
        yield {
            **env,
            "agency_user": agency_user,
            "agency_pw": agency_pw,
            "allowed": allowed,
            "denied": denied,
            "dbname": iso.dbname,
        }
    finally:
        iso.drop_database()
        if started and not os.environ.get("CRM_SASL_KEEP"):
            sec_stack("stop", "kafka", check=False)


def settings_for(env: dict[str, str], **overrides: str) -> Settings:
    values = {k.removeprefix("CRM_").lower(): v for k, v in env.items() if k.startswith("CRM_")}
    return Settings(**{**values, **overrides})


async def test_round_trip_over_sasl_ssl_with_the_settings_alone(secured):
    s = settings_for(secured)
    assert s.kafka_security_protocol == "SASL_SSL" and s.kafka_ssl_cafile
    t = Topics(s.topic_namespace)
    await ensure_topics(
        s, [TopicSpec(t.raw, 1, 1), TopicSpec(secured["allowed"], 1, 1), TopicSpec(secured["denied"], 1, 1)]
    )
    producer = make_producer(s, client_id="sec-test")
    await producer.start()
    try:
        publisher = Publisher(s, producer)
        await publisher.send_many(
            [
                (t.raw, b"k", b"over TLS with SCRAM"),
                (secured["allowed"], b"r1", orjson.dumps({"report_id": "r1"})),
                (secured["denied"], b"r2", orjson.dumps({"report_id": "r2"})),
            ]
        )
    finally:
        await producer.stop()
    assert {r.value for r in await read_to_end(s, t.raw)} == {b"over TLS with SCRAM"}


async def test_wrong_password_and_plaintext_are_refused(secured):
    bad = settings_for(secured, kafka_sasl_password="wrong-password")
    producer = AIOKafkaProducer(**kafka_client_kwargs(bad), request_timeout_ms=5000)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()
    plain = settings_for(secured, kafka_security_protocol="PLAINTEXT")
    producer = AIOKafkaProducer(**kafka_client_kwargs(plain), request_timeout_ms=3000)
    with pytest.raises((KafkaError, TimeoutError)):
        await asyncio.wait_for(producer.start(), 15)
    await producer.stop()
    untrusted = settings_for(secured, kafka_ssl_cafile="")  # system CAs do not know the broker's CA
    producer = AIOKafkaProducer(**kafka_client_kwargs(untrusted), request_timeout_ms=3000)
    with pytest.raises((KafkaError, TimeoutError, OSError)):
        await asyncio.wait_for(producer.start(), 15)
    await producer.stop()


async def test_a_downstream_consumer_reads_only_its_routed_topic(secured):
    await test_round_trip_over_sasl_ssl_with_the_settings_alone(secured)  # topics and records exist
    agency = settings_for(
        secured, kafka_sasl_username=secured["agency_user"], kafka_sasl_password=secured["agency_pw"]
    )

    async def read(topic: str) -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic,
            **kafka_client_kwargs(agency),
            group_id=f"{secured['agency_user']}-1",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            out: list[bytes] = []
            for _ in range(20):
                batch = await consumer.getmany(timeout_ms=500)
                out += [r.value for records in batch.values() for r in records]
                if out:
                    break
            return out
        finally:
            await consumer.stop()

    async def denied(topic: str) -> bool:
        """Refused (TopicAuthorizationFailed), or nothing delivered although the topic has records."""
        try:
            return not await asyncio.wait_for(read(topic), 25)
        except (KafkaError, TimeoutError):
            return True

    assert await read(secured["allowed"])
    assert await denied(secured["denied"])  # another agency's routed topic
    ns = Topics(secured["CRM_TOPIC_NAMESPACE"])
    assert await denied(ns.raw)  # raw payloads hold contact details


def test_ingress_to_worker_over_sasl_ssl(secured):
    """The ingress publishes over SASL_SSL (202 only after the secured broker confirmed); the worker too
    when pipeline.worker passes faust_broker_kwargs(settings) to faust.App."""
    env = {k: v for k, v in secured.items() if k.startswith("CRM_")}
    port = free_port()
    env.update(
        {
            "CRM_INGRESS_PORT": str(port),
            "CRM_ENV": "test",
            "CRM_TOPIC_PARTITIONS": "1",
            "CRM_DATABASE_URL": env["CRM_DATABASE_URL"].rsplit("/", 1)[0] + "/" + secured["dbname"],
        }
    )
    for step in (["topics", "create"], ["store", "migrate"]):
        subprocess.run(
            [sys.executable, "-m", "pipeline", *step],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
            timeout=120,
        )
    procs = [
        Process("sasl-ingress", ["ingress"], env),
        Process("sasl-worker", ["worker", "--loglevel", "warning"], env),
    ]
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/readyz", procs[0])
        import urllib.request

        req = urllib.request.Request(
            url + "/v1/channels/web/reports",
            data=orjson.dumps(
                {"text": "Jalan berlubang besar di Jl. Raya Bogor km 21", "email": "tls@example.com"}
            ),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 202
            rid = orjson.loads(resp.read())["report_id"]
        s = settings_for(env)
        ingest = [
            orjson.loads(r.value)
            for r in asyncio.run(read_to_end(s, Topics(s.topic_namespace).ingest("web")))
        ]
        assert [r["report_id"] for r in ingest] == [rid]
        iso_dsn = env["CRM_DATABASE_URL"]
        import psycopg

        def stored() -> bool:
            with psycopg.connect(iso_dsn) as conn:
                return bool(conn.execute("SELECT 1 FROM reports WHERE report_id = %s", (rid,)).fetchall())

        wait_until(stored, timeout=120, what="the report stored by a worker on the secured broker")
    finally:
        for p in procs:
            p.stop()
