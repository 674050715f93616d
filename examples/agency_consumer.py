"""Example downstream consumer: one agency's queue from its routed topic (and its status changes).

    python examples/agency_consumer.py "Dinas Bina Marga" --bootstrap 127.0.0.1:19092 --namespace crm

It subscribes to ``<ns>.routed.agency.<slug>.v1`` (reports routed or forwarded to the agency) and
``<ns>.status-changes.v1`` (to drop reports that were forwarded away or closed), deduplicates on
``report_id`` (delivery is at-least-once) and prints the open queue, oldest first, whenever it changes.
Only the public projection is read: no contact details, a private reporter shows as ``private``.
Stop with Ctrl-C. The same queue is available from the Open311 API:
``GET /open311/v2/requests.json?agency_responsible=Dinas%20Bina%20Marga&status=open&api_key=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

from aiokafka import AIOKafkaConsumer

CLOSED = {"Selesai", "TL Ditolak"}


def slug(name: str) -> str:  # the same rule as pipeline.topics.slug
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def show(agency: str, queue: dict[str, dict]) -> None:
    print(f"\n== {agency}: {len(queue)} open report(s) ==")
    for r in sorted(queue.values(), key=lambda r: r.get("received_at", "")):
        t = r.get("triage") or {}
        region = (t.get("region") or {}).get("kelurahan") or "-"
        status = r.get("_status", "Menunggu")
        print(
            f"{r.get('received_at', '')[:16]}  {status:18} {t.get('category') or '-':18} "
            f"{region:22} due {str(t.get('expected_by', '-'))[:10]}  {r['text'][:60]}"
        )


async def main(
    agency: str, bootstrap: str, namespace: str, group: str | None, once: float | None = None
) -> dict[str, dict]:
    """Follow the queue; with ``once``, stop after ``once`` seconds without news and return it."""
    routed = f"{namespace}.routed.agency.{slug(agency)}.v1"
    changes = f"{namespace}.status-changes.v1"
    consumer = AIOKafkaConsumer(
        routed,
        changes,
        bootstrap_servers=bootstrap,
        group_id=group,  # None: read everything from the start each time
        auto_offset_reset="earliest",
        enable_auto_commit=group is not None,
    )
    await consumer.start()
    queue: dict[str, dict] = {}
    closed: set[str] = set()
    changes: dict[str, dict] = {}  # report id -> its latest status change
    quiet_since = asyncio.get_running_loop().time()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            touched = False
            if once is not None:
                now = asyncio.get_running_loop().time()
                if batch:
                    quiet_since = now
                elif now - quiet_since >= once and consumer.assignment():
                    show(agency, queue)
                    print(f"({len(closed)} report(s) closed or forwarded away while reading)")
                    return queue
            for tp, records in batch.items():
                for rec in records:
                    value = json.loads(rec.value)
                    rid = value.get("report_id")
                    if tp.topic == routed:
                        if rid not in queue and rid not in closed:
                            queue[rid] = value
                            touched = True
                    else:  # the topics interleave freely: keep the latest change, apply it below
                        changes[rid] = value
                        touched = True
            for rid, change in changes.items():
                if rid not in queue:
                    continue
                if change["to_status"] in CLOSED or change.get("agency") not in (None, agency):
                    del queue[rid]
                    closed.add(rid)
                else:
                    queue[rid]["_status"] = change["to_status"]
            if touched and once is None:
                show(agency, queue)
    finally:
        await consumer.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("agency", help="official agency name, e.g. 'Dinas Bina Marga'")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--namespace", default="crm")
    parser.add_argument("--group", default=None, help="consumer group (commit offsets); default: none")
    parser.add_argument(
        "--once",
        nargs="?",
        type=float,
        const=3.0,
        default=None,
        help="print the queue once nothing new came for this many seconds (default 3), then exit",
    )
    args = parser.parse_args()
    try:
        asyncio.run(main(args.agency, args.bootstrap, args.namespace, args.group, args.once))
    except KeyboardInterrupt:
        pass
