"""Access and data protection helpers: Kafka SASL/TLS client options and contact encryption at rest
(secrets read from files: :mod:`pipeline.secret_files`).

* :func:`kafka_client_kwargs` — the security options every aiokafka producer, consumer and admin
  client gets (``CRM_KAFKA_SECURITY_PROTOCOL``, ``CRM_KAFKA_SASL_*``, ``CRM_KAFKA_SSL_CAFILE``);
  :func:`faust_broker_kwargs` the same for the Faust app.
* :class:`ContactCipher` — AES-256-GCM for reporter contact details in the CRM store. A value is
  stored as ``enc:v1:<key id>:<base64(nonce | ciphertext | tag)>``; the associated data binds it to
  its report and column, so a ciphertext copied to another row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
from typing import Any

from .settings import Settings

# ------------------------------------------------------------------------------------------------ Kafka


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context (system CAs, or ``CRM_KAFKA_SSL_CAFILE``), or None for plaintext."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    ctx = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    ctx.check_hostname = settings.kafka_ssl_check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.kafka_ssl_certfile:  # mutual TLS (optional)
        key_pw = settings.kafka_ssl_key_password
        ctx.load_cert_chain(
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile or None,
            key_pw.get_secret_value() if key_pw else None,
        )
    return ctx


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer/Consumer/AdminClient: bootstrap plus security."""
    out: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    ctx = kafka_ssl_context(settings)
    if ctx is not None:
        out["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        out.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password else None,
        )
    return out


def faust_broker_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App``: ``broker_credentials`` when the broker needs TLS/SASL."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    import faust

    ctx = kafka_ssl_context(settings)
    if protocol == "SSL":
        return {"broker_credentials": faust.SSLCredentials(ctx)}
    password = settings.kafka_sasl_password
    creds = faust.SASLCredentials(
        username=settings.kafka_sasl_username or "",
        password=password.get_secret_value() if password else "",
        ssl_context=ctx,  # None (SASL_PLAINTEXT) or a context (SASL_SSL): faust derives the protocol
        mechanism=settings.kafka_sasl_mechanism,
    )
    return {"broker_credentials": creds}


# ---------------------------------------------------------------------------------- contact encryption

PREFIX = "enc:v1:"


class DecryptError(ValueError):
    """A stored contact value could not be decrypted (wrong key, tampered, or another row's value)."""


def _key_bytes(secret: str) -> bytes:
    """32 key bytes from the setting: base64 of 32 bytes, or (dev/test) any passphrase, hashed."""
    try:
        raw = base64.b64decode(secret, validate=True)
        if len(raw) == 32:
            return raw
    except ValueError:
        pass
    return hashlib.sha256(b"crm-contact-key\x00" + secret.encode()).digest()


class ContactCipher:
    """AES-256-GCM for contact columns; ``previous`` keys still decrypt (key rotation)."""

    def __init__(self, key: str, previous: list[str] | None = None) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._keys: dict[str, AESGCM] = {}
        for i, secret in enumerate([key, *(previous or [])]):
            raw = _key_bytes(secret)
            kid = hashlib.sha256(b"kid\x00" + raw).hexdigest()[:8]
            self._keys.setdefault(kid, AESGCM(raw))
            if i == 0:
                self.key_id = kid

    @classmethod
    def from_settings(cls, settings: Settings) -> ContactCipher:
        previous = settings.contact_encryption_previous_keys
        return cls(
            settings.contact_encryption_key.get_secret_value(),
            [k.strip() for k in previous.get_secret_value().split(",") if k.strip()] if previous else [],
        )

    @staticmethod
    def _aad(report_id: str, column: str) -> bytes:
        return f"crm-contact\x00{report_id}\x00{column}".encode()

    def encrypt(self, value: str | None, report_id: str, column: str) -> str | None:
        if value is None:
            return None
        nonce = os.urandom(12)
        sealed = self._keys[self.key_id].encrypt(nonce, value.encode(), self._aad(str(report_id), column))
        return f"{PREFIX}{self.key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, value: str | None, report_id: str, column: str) -> str | None:
        """The clear value; a value stored before encryption (no prefix) is returned as it is."""
        if value is None or not value.startswith(PREFIX):
            return value
        from cryptography.exceptions import InvalidTag

        kid, _, blob = value[len(PREFIX) :].partition(":")
        aead = self._keys.get(kid)
        if aead is None:
            raise DecryptError(f"contact encrypted with unknown key id {kid!r}")
        try:
            raw = base64.b64decode(blob, validate=True)
            return aead.decrypt(raw[:12], raw[12:], self._aad(str(report_id), column)).decode()
        except (InvalidTag, ValueError) as exc:
            raise DecryptError(f"contact value does not decrypt for this report/column: {exc!r}") from None


CONTACT_COLUMNS = ("name", "email", "phone", "handle")


def decrypt_contact_row(cipher: ContactCipher, row: dict[str, Any], report_id_key: str = "report_id") -> None:
    """Decrypt the contact columns of a fetched row in place (columns absent from the row are skipped)."""
    rid = str(row[report_id_key])
    for column in CONTACT_COLUMNS:
        if column in row:
            row[column] = cipher.decrypt(row[column], rid, column)


def seal_contact(
    cipher: ContactCipher,
    report_id: str,
    name: str | None,
    email: str | None,
    phone: str | None,
    handle: str | None,
) -> tuple[str | None, str | None, str | None, str | None, str]:
    """(name, email, phone, handle, key id) as stored in ``reporter_contacts``."""
    rid = str(report_id)
    return (
        cipher.encrypt(name, rid, "name"),
        cipher.encrypt(email, rid, "email"),
        cipher.encrypt(phone, rid, "phone"),
        cipher.encrypt(handle, rid, "handle"),
        cipher.key_id,
    )


async def encrypt_existing_contacts(settings: Settings) -> int:
    """Encrypt contact rows stored in clear text (before migration 0003) or under an old key; idempotent.

    Returns how many rows were rewritten. Afterwards the migration's CHECK constraint can be validated.
    """
    import psycopg
    from psycopg.rows import dict_row

    cipher = ContactCipher.from_settings(settings)
    done = 0
    async with await psycopg.AsyncConnection.connect(
        settings.database_url.get_secret_value(), row_factory=dict_row
    ) as conn:
        rows = await (
            await conn.execute(
                "SELECT report_id::text AS report_id, name, email, phone, handle FROM reporter_contacts "
                "WHERE key_id IS DISTINCT FROM %s FOR UPDATE",
                (cipher.key_id,),
            )
        ).fetchall()
        for row in rows:
            decrypt_contact_row(cipher, row)
            sealed = seal_contact(
                cipher, row["report_id"], row["name"], row["email"], row["phone"], row["handle"]
            )
            await conn.execute(
                "UPDATE reporter_contacts SET name = %s, email = %s, phone = %s, handle = %s, key_id = %s "
                "WHERE report_id = %s",
                (*sealed, row["report_id"]),
            )
            done += 1
        await conn.commit()
    return done
