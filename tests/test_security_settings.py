"""Secrets: only from settings or files, production refuses development secrets; contact cipher."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.security import ContactCipher, DecryptError
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STRONG = {
    "reporter_id_key": "r" * 40,
    "database_url": "postgresql://crm:Zx81-very-long-secret@db:5432/crm",
    "jaki_token": "j" * 40,
    "facebook_app_secret": "f" * 40,
    "facebook_verify_token": "v" * 40,
    "governor_social_app_secret": "g" * 40,
    "governor_social_verify_token": "w" * 40,
    "sms_twilio_auth_token": "t" * 40,
    "sms_gateway_secret": "s" * 40,
    "desk_credentials": '{"k9": {"office_code": "31", "office_level": "balaikota"}}',
    "lapor_token": "l" * 40,
    "notify_sms_token": "n" * 40,
    "api_keys": '{"a9": {"consumer": "public", "scopes": []}}',
    "contact_encryption_key": base64.b64encode(os.urandom(32)).decode(),
    "media_s3_secret_key": "m" * 40,
}


def test_production_refuses_every_default_secret() -> None:
    with pytest.raises(ValidationError) as err:
        Settings(env="production")
    message = str(err.value)
    for name in ("CRM_REPORTER_ID_KEY", "CRM_DATABASE_URL", "CRM_CONTACT_ENCRYPTION_KEY", "CRM_API_KEYS"):
        assert name in message
    Settings(env="production", **STRONG)  # all replaced: starts
    for name in STRONG:
        with pytest.raises(ValidationError, match=f"CRM_{name.upper()}"):
            Settings(
                env="production", **{**STRONG, name: Settings.model_fields[name].default.get_secret_value()}
            )
    with pytest.raises(ValidationError, match="CRM_KAFKA_SASL_PASSWORD"):
        Settings(env="production", **STRONG, kafka_sasl_password="crm-dev-kafka-password")
    with pytest.raises(ValidationError, match="32 random bytes"):
        Settings(env="production", **{**STRONG, "contact_encryption_key": "short-but-not-dev"})


def test_secrets_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "jaki_token"
    secret.write_text("from-a-file-0123456789\n")
    monkeypatch.setenv("CRM_JAKI_TOKEN_FILE", str(secret))
    monkeypatch.setenv("CRM_KAFKA_SASL_PASSWORD_FILE", str(secret))
    s = Settings()
    assert s.jaki_token.get_secret_value() == "from-a-file-0123456789"
    assert s.kafka_sasl_password.get_secret_value() == "from-a-file-0123456789"
    monkeypatch.setenv("CRM_JAKI_TOKEN", "env-wins")
    assert Settings().jaki_token.get_secret_value() == "env-wins"
    monkeypatch.setenv("CRM_LAPOR_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="CRM_LAPOR_TOKEN_FILE"):
        Settings()


def test_secrets_are_never_printed() -> None:
    s = Settings(kafka_sasl_password="pw-123456", contact_encryption_key="ck-123456")
    assert "pw-123456" not in repr(s) and "ck-123456" not in repr(s)


def test_no_secret_in_the_repository() -> None:
    """Tracked files hold only the documented development secrets (dev-only-…), never a real one."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    pem = [f for f in files if f.endswith((".pem", ".key", ".p12", ".jks", ".keystore"))]
    assert not pem, f"key material tracked in git: {pem}"
    env_files = [f for f in files if Path(f).name in (".env", "secrets.env")]
    assert not env_files


def test_contact_cipher_roundtrip_binding_and_rotation() -> None:
    old, new = base64.b64encode(os.urandom(32)).decode(), base64.b64encode(os.urandom(32)).decode()
    c_old = ContactCipher(old)
    sealed = c_old.encrypt("warga@example.com", "rid-1", "email")
    assert sealed.startswith(f"enc:v1:{c_old.key_id}:") and "warga" not in sealed
    assert c_old.encrypt("warga@example.com", "rid-1", "email") != sealed  # random nonce
    assert c_old.decrypt(sealed, "rid-1", "email") == "warga@example.com"
    with pytest.raises(DecryptError):
        c_old.decrypt(sealed, "rid-2", "email")  # copied to another report
    with pytest.raises(DecryptError):
        c_old.decrypt(sealed, "rid-1", "phone")  # copied to another column
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(DecryptError):
        c_old.decrypt(tampered, "rid-1", "email")
    rotated = ContactCipher(new, previous=[old])
    assert rotated.key_id != c_old.key_id
    assert rotated.decrypt(sealed, "rid-1", "email") == "warga@example.com"
    with pytest.raises(DecryptError):
        ContactCipher(new).decrypt(sealed, "rid-1", "email")
    assert c_old.decrypt("legacy clear text", "rid-1", "email") == "legacy clear text"
    assert c_old.encrypt(None, "rid-1", "email") is None


def test_production_refuses_the_fault_injection_hook():
    import pytest
    from pydantic import ValidationError

    from pipeline.settings import Settings

    with pytest.raises(ValidationError, match="CHAOS_POISON_MARKER"):
        Settings(env="production", chaos_poison_marker="X")
