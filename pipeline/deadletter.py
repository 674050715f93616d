"""Dead-letter records: anything the pipeline could not accept or process, with why and what it was.

A dead letter keeps the raw payload (size-capped, base64) so that, after a fix, ``replay`` can feed it
through again. Its schema is versioned with the envelope (``deadletter.v1``).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field

from .envelope import SCHEMA_VERSION, utcnow


class SourcePosition(BaseModel):
    topic: str
    partition: int
    offset: int


class DeadLetter(BaseModel):
    schema_version: str = SCHEMA_VERSION
    dead_letter_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    channel: str | None = None
    stage: str = Field(description="where it failed: ingress, decode, triage, sink, ...")
    code: str = Field(description="machine-readable reason, e.g. malformed_json, bad_signature")
    reason: str = Field(description="human-readable reason a person can act on")
    failed_at: datetime = Field(default_factory=utcnow)
    report_id: str | None = None
    content_type: str | None = None
    raw_b64: str = Field(description="raw payload, base64, cut at the cap")
    raw_size: int
    raw_sha256: str
    raw_truncated: bool
    source: SourcePosition | None = None
    attempts: int = 1
    meta: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def build(cls, *, raw: bytes, cap: int, total_size: int | None = None, **fields: Any) -> DeadLetter:
        """``total_size``: the original size when ``raw`` is already only the start of the payload."""
        size = max(total_size or 0, len(raw))
        return cls(
            raw_b64=base64.b64encode(raw[:cap]).decode(),
            raw_size=size,
            raw_sha256=hashlib.sha256(raw).hexdigest(),
            raw_truncated=size > min(len(raw), cap),
            **fields,
        )

    def raw(self) -> bytes:
        return base64.b64decode(self.raw_b64)

    def dumps(self) -> bytes:
        return orjson.dumps(self.model_dump(exclude_none=True))

    @classmethod
    def loads(cls, data: bytes) -> DeadLetter:
        return cls.model_validate(orjson.loads(data))
