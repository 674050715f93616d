"""The status topics' JSON Schemas shipped to consumers match the models (see docs/consumers.md)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from pipeline.crm.status import StatusChange, StatusEvent, json_schemas

SCHEMAS = Path(__file__).resolve().parents[1] / "pipeline" / "schemas"


def test_shipped_status_schemas_match_the_models():
    for name, schema in json_schemas().items():
        shipped = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
        assert shipped == json.loads(json.dumps(schema)), name


def test_records_validate_against_the_shipped_schemas():
    event = StatusEvent(report_id="5f0c1c1e-0000-5000-8000-000000000001", status="proses", actor="budi")
    assert event.status == "Proses"
    jsonschema.validate(
        json.loads(event.model_dump_json()),
        json.loads((SCHEMAS / "status-event.v1.schema.json").read_text(encoding="utf-8")),
    )
    change = StatusChange(
        event_id=event.event_id,
        report_id=event.report_id or "",
        tracking_number="JKT-00000001",
        from_status="Menunggu",
        to_status="Proses",
        open311_status="open",
        actor="budi",
        changed_at=event.at,
    )
    jsonschema.validate(
        json.loads(change.dumps()),
        json.loads((SCHEMAS / "status-change.v1.schema.json").read_text(encoding="utf-8")),
    )
