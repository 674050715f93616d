"""The object store, through the S3 API (boto3): SeaweedFS on the local stack, any S3 endpoint in
production (``CRM_MEDIA_S3_*``).

Objects are content-addressed by the sha256 of the original bytes, so a photo sent twice (a
redelivery, or the same picture on two reports) is one object::

    original/<aa>/<sha256>.<ext>   as received, EXIF included: only roles that may read contacts
    public/<aa>/<sha256>.<ext>     re-encoded without metadata: Open311, agencies, officers
    thumb/<aa>/<sha256>.jpg        320 px, the dashboard's report page

boto3 is synchronous; calls run in a thread so the event loop of the media stage or the API never
waits on the store.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..settings import Settings


class StoreUnavailable(RuntimeError):
    """The object store did not answer or refused: ours to retry, never the citizen's fault."""


@dataclass(frozen=True)
class Keys:
    original: str
    public: str
    thumb: str

    @classmethod
    def for_sha(cls, sha: str, ext: str, public_ext: str) -> Keys:
        return cls(
            original=f"original/{sha[:2]}/{sha}.{ext}",
            public=f"public/{sha[:2]}/{sha}.{public_ext}",
            thumb=f"thumb/{sha[:2]}/{sha}.jpg",
        )


def _client(settings: Settings, endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.media_s3_region,
        aws_access_key_id=settings.media_s3_access_key,
        aws_secret_access_key=settings.media_s3_secret_key.get_secret_value(),
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=3,
            read_timeout=30,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    )


class MediaStore:
    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.media_bucket
        self.url_ttl_s = settings.media_url_ttl_s
        self._s3 = _client(settings, settings.media_s3_endpoint)
        # Signed URLs name the host officers reach (a proxy or CDN in production), not the internal one.
        self._signer = _client(settings, settings.media_s3_public_endpoint or settings.media_s3_endpoint)
        self._bucket_ok = False

    async def _call(self, name: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self._s3, name), **kwargs)
        except ClientError:
            raise
        except (BotoCoreError, OSError) as exc:
            raise StoreUnavailable(f"object store: {type(exc).__name__}: {exc}") from exc

    async def ensure_bucket(self) -> None:
        if self._bucket_ok:
            return
        try:
            await self._call("head_bucket", Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise StoreUnavailable(f"object store refused HEAD {self.bucket}: {exc}") from exc
            try:
                await self._call("create_bucket", Bucket=self.bucket)
            except ClientError as exc2:
                if _code(exc2) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise StoreUnavailable(f"object store refused to create {self.bucket}: {exc2}") from exc2
        self._bucket_ok = True

    async def exists(self, key: str) -> bool:
        try:
            await self._call("head_object", Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreUnavailable(f"object store refused HEAD {key}: {exc}") from exc

    async def put_once(self, key: str, data: bytes, content_type: str) -> bool:
        """Store ``data`` unless the key exists (content-addressed: same key, same bytes). True if written."""
        await self.ensure_bucket()
        if await self.exists(key):
            return False
        try:
            await self._call("put_object", Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except ClientError as exc:
            raise StoreUnavailable(f"object store refused PUT {key}: {exc}") from exc
        return True

    async def get(self, key: str) -> tuple[bytes, str] | None:
        try:
            obj = await self._call("get_object", Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StoreUnavailable(f"object store refused GET {key}: {exc}") from exc
        body = await asyncio.to_thread(obj["Body"].read)
        return body, obj.get("ContentType") or "application/octet-stream"

    async def delete(self, key: str) -> None:
        try:
            await self._call("delete_object", Bucket=self.bucket, Key=key)
        except ClientError as exc:
            raise StoreUnavailable(f"object store refused DELETE {key}: {exc}") from exc

    async def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = await self._call("list_objects_v2", **kwargs)
            except ClientError as exc:
                raise StoreUnavailable(f"object store refused LIST {prefix}: {exc}") from exc
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = page.get("NextContinuationToken")

    def signed_url(self, key: str, ttl_s: int | None = None) -> str:
        """A time-limited GET URL (SigV4 query signature); computed locally, no call to the store."""
        return self._signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=ttl_s or self.url_ttl_s
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
