"""``crm-pipeline status [run|escalate]``: the status-event consumer with its escalation check."""

from __future__ import annotations

import argparse
import asyncio

from ..settings import get_settings
from .status_service import StatusConsumer, StatusService


def status_main(args: argparse.Namespace) -> int:
    settings = get_settings()

    async def escalate() -> int:
        service = StatusService(settings)
        try:
            raised = await service.check_escalations()
        finally:
            await service.stop()
        for e in raised:
            print(f"{e.tracking_number} {e.status:18} {e.agency or '-'} overdue {e.overdue_hours} h")
        return 0

    async def run() -> int:
        consumer = StatusConsumer(settings)
        await consumer.start()
        try:
            await consumer.run_forever()
        finally:
            await consumer.stop()
        return 0

    return asyncio.run(escalate() if args.action == "escalate" else run())
