"""One typed settings object, read from the environment (prefix ``CRM_``).

Every process (ingress, worker, CLI) reads the same object so that a deployment is described by
environment variables alone. Defaults point at the local stack started by ``deploy/stack.sh``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .secret_files import FileSecretsSource

#: Secrets that ship with the code for the local stack; production refuses to start with them.
DEV_SECRETS = frozenset({"dev-only-reporter-key-change-me", "crm-dev-password", "dev-only-"})
#: Kafka SCRAM password of the local SASL_SSL test broker (deploy/stack.sh KAFKA_SECURITY=sasl_ssl).
DEV_KAFKA_PASSWORDS = frozenset({"crm-dev-kafka-password", "admin-dev-secret"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRM_", env_file=None, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        # CRM_<NAME>_FILE reads a secret from a file (pipeline/secret_files.py); CRM_<NAME> wins over it.
        files = FileSecretsSource(settings_cls)
        return init_settings, env_settings, files, dotenv_settings, file_secret_settings

    env: Literal["development", "test", "production"] = "development"

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    topic_namespace: str = Field(
        "crm", pattern=r"^[a-z][a-z0-9_-]*$", description="first segment of every topic name"
    )
    topic_partitions: int = Field(6, ge=1)
    topic_replication: int = Field(1, ge=1)
    topic_min_insync_replicas: int = Field(1, ge=1)
    producer_linger_ms: int = 5
    producer_compression: Literal["none", "gzip", "lz4", "zstd"] = Field(
        "zstd",
        description="zstd: aiokafka's lz4 is LZ4-HC (level 9), 3.4x the CPU of zstd level 3 for a "
        "worse ratio (3.5 vs 5.8 on report envelopes); any Kafka client since 2.1 reads zstd",
    )
    produce_timeout_s: float = 10.0
    # Kafka access (SECURITY.md): every producer, consumer, admin client and the Faust app use these.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle that signed the broker certificates")
    kafka_ssl_check_hostname: bool = True
    kafka_ssl_certfile: str | None = Field(None, description="client certificate (mutual TLS, optional)")
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_key_password: SecretStr | None = None

    # Redis (exact-dedup state) and PostgreSQL (the CRM store)
    redis_url: str = "redis://127.0.0.1:16379/0"
    database_url: SecretStr = SecretStr("postgresql://crm:crm-dev-password@127.0.0.1:15432/crm")

    # Faust worker
    worker_app_id: str = "crm-pipeline"
    worker_web_port: int = 6066
    worker_batch_size: int = Field(500, ge=1)
    worker_batch_within_s: float = Field(
        0.1, description="longest wait to fill a batch (0.1 s halved p99 at 1,000/s against 0.2 s)"
    )
    worker_concurrency: int = Field(1, ge=1, le=64, description="agent instances per worker process")
    worker_pipelined: bool = Field(
        True, description="triage the next batch while the previous one is stored and published"
    )
    worker_take_ahead: int = Field(
        500,
        ge=0,
        description="events the stream keeps buffering while a batch is worked on (0: Faust's noack_take)",
    )
    worker_fetch_partition_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="bytes a fetch reads ahead per partition (max.partition.fetch.bytes; runbook: Memory)",
    )
    worker_metrics_port: int = Field(0, ge=0, description="worker /metrics /healthz /readyz port; 0 = off")
    worker_event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="event loop of the triage and surge workers: uvloop (libuv) or the standard one",
    )
    dedup_ttl_s: int = Field(30 * 24 * 3600, ge=60, description="how long a seen report id is remembered")
    dedup_text_window_s: int = Field(600, ge=0, description="same sender + same text within this window")
    chaos_poison_marker: str | None = Field(
        None, description="test only (tests/chaos): triage raises for texts containing it; off when unset"
    )

    # Triage that learns (issue #16; pipeline/learning/, docs/runbook.md "Triage models")
    route_target_precision: float = Field(
        0.95,
        gt=0,
        le=1,
        description="dispatch automatically only above the confidence where the model's held-out decisions "
        "reached this precision; the rest wait in crm.triage.v1 for a person",
    )
    model_poll_s: float = Field(
        10.0, ge=0, description="how often a worker checks the model registry for a promotion (0 = never)"
    )

    # Surge detection (issue #17; pipeline/surge_stage.py, docs/runbook.md "Surges")
    surge_enabled: bool = Field(True, description="count reports per place x category and raise surges")
    surge_windows: str = Field("15m,1h,6h", description="the three sliding windows, shortest first")
    surge_thresholds: str | None = Field(None, description="thresholds CSV (default: the packaged v1)")
    surge_baseline: str | None = Field(
        None, description="baseline file from `crm-pipeline surge fit`; unset = the priors in the thresholds"
    )
    surge_tick_s: float = Field(30.0, gt=0, description="how often open surges are checked without reports")
    surge_metrics_port: int = Field(
        0, ge=0, description="surge worker /metrics /healthz /readyz port; 0 = off"
    )
    surge_batch_size: int = Field(1000, ge=1)
    surge_batch_within_s: float = Field(
        5.0,
        gt=0,
        description="longest wait to fill a surge batch: each batch writes the touched groups' state "
        "to the changelog; 5 s against 1 s cut the surge worker's CPU a report by a quarter",
    )
    surge_notify_addresses: str = Field(
        "{}", description="JSON map agency_id -> e-mail address told of surges (e.g. bpbd, sumber_daya_air)"
    )
    surge_notify_address_template: str = Field(
        "{agency_id}@agency.invalid", description="address for agencies not in the map ('' = none)"
    )

    # Ingress (push channels)
    ingress_host: str = "127.0.0.1"
    ingress_port: int = 8080
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    dead_letter_raw_cap_bytes: int = Field(64 * 1024, ge=256)
    lag_sample_s: float = Field(
        15.0, ge=0, description="ingress: sample the worker group's lag for /metrics every N s (0 = off)"
    )

    # Operations dashboard (issue #7)
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8090
    dashboard_refresh_s: float = Field(2.0, gt=0, description="how often live numbers are pushed (SSE)")
    dashboard_officer_api: str | None = Field(
        None, description="officer API the report page's split/merge go to (default: api_host:api_port)"
    )

    # Report media (issue #21, pipeline/media/): the S3-compatible object store and the media stage.
    media_s3_endpoint: str = Field("http://127.0.0.1:19692", description="S3 API endpoint (local: SeaweedFS)")
    media_s3_public_endpoint: str | None = Field(None, description="host in officers' signed URLs, if other")
    media_s3_region: str = "us-east-1"
    media_s3_access_key: str = "crm-dev-access-key"
    media_s3_secret_key: SecretStr = SecretStr("dev-only-s3-secret-key")
    media_bucket: str = Field("crm-media", pattern=r"^[a-z0-9][a-z0-9.-]{2,62}$")
    media_max_bytes: int = Field(20_000_000, ge=10_000, description="largest photo kept (bytes)")
    media_allowed_types: str = "image/jpeg,image/png,image/webp,image/gif,image/heic"
    media_fetch_timeout_s: float = Field(30.0, gt=0)
    media_fetch_ca_file: str | None = Field(None, description="extra CA bundle for fetching (TLS proxies)")
    media_fetch_allow_private: bool = Field(
        False, description="fetch from loopback/private addresses too (local tests only: SSRF guard off)"
    )
    media_max_attempts: int = Field(3, ge=1, description="failed fetches before an attachment is 'failed'")
    media_retry_first_s: float = Field(60.0, ge=0, description="wait after the first failed fetch")
    media_retry_factor: float = Field(5.0, ge=1, description="each later wait is this many times longer")
    media_url_ttl_s: int = Field(900, ge=10, le=7 * 24 * 3600, description="officers' signed URLs")
    media_public_base_url: str | None = Field(
        None, description="base of Open311 media_url (e.g. https://crm.jakarta.go.id); else the request's"
    )
    media_fetch_concurrency: int = Field(8, ge=1, le=64, description="attachments fetched at once")
    media_metrics_port: int = Field(0, ge=0, description="media stage /metrics /healthz /readyz; 0 = off")

    # Pseudonymous reporter ids are HMACs of contact details under this key.
    reporter_id_key: SecretStr = SecretStr("dev-only-reporter-key-change-me")
    # Reporter contact details are AES-256-GCM encrypted in the CRM store (pipeline/security.py): base64
    # of 32 random bytes (`openssl rand -base64 32`). Old keys stay for decryption (comma list).
    contact_encryption_key: SecretStr = SecretStr("dev-only-contact-key")
    contact_encryption_previous_keys: SecretStr | None = None

    # Rate limits on push channels (pipeline/ratelimit.py, Redis token buckets). 0 = no limit.
    rate_limit_enabled: bool = True
    rate_limit_sender_per_min: float = Field(6.0, ge=0, description="reports per reporter per minute")
    rate_limit_sender_burst: int = Field(10, ge=1, description="reports a reporter may send at once")
    rate_limit_ip_per_min: float = Field(300.0, ge=0, description="requests per client IP per minute")
    rate_limit_ip_burst: int = Field(100, ge=1)
    rate_limit_ip_exempt: str = Field(
        "127.0.0.0/8,::1/128", description="CIDRs without an IP limit (local tools, webhook relays)"
    )
    rate_limit_trusted_channels: str = Field(
        "desk_kelurahan,desk_kecamatan,desk_walikota,desk_balaikota,desk_inspektorat",
        description="channels without rate limits: officers entering walk-in reports (bound to one office)",
    )
    ingress_trusted_proxies: str = Field(
        "", description="CIDRs of reverse proxies whose X-Forwarded-For names the client IP"
    )

    # Push-channel secrets (issue #3). The defaults are for the local stack and tests only.
    jaki_token: SecretStr = SecretStr("dev-only-jaki-token")
    facebook_app_secret: SecretStr = SecretStr("dev-only-facebook-app-secret")
    facebook_verify_token: SecretStr = SecretStr("dev-only-facebook-verify-token")
    governor_social_app_secret: SecretStr = SecretStr("dev-only-governor-social-app-secret")
    governor_social_verify_token: SecretStr = SecretStr("dev-only-governor-social-verify-token")
    meta_replay_window_s: int = Field(
        38 * 3600, ge=60, description="oldest webhook entry accepted (Meta retries for up to 36 h)"
    )
    sms_twilio_auth_token: SecretStr = SecretStr("dev-only-twilio-auth-token")
    sms_public_base_url: str | None = Field(
        None, description="URL the SMS provider signs (e.g. https://crm.jakarta.go.id) when behind a proxy"
    )
    sms_gateway_secret: SecretStr = SecretStr("dev-only-sms-gateway-secret")
    sms_replay_window_s: int = Field(300, ge=10, description="generic SMS gateway: max clock skew")
    desk_credentials: SecretStr = Field(
        SecretStr(
            '{"dev-only-desk-kelurahan": {"office_code": "31.71.01.1001", "office_level": "kelurahan"},'
            ' "dev-only-desk-kecamatan": {"office_code": "31.71.01", "office_level": "kecamatan"},'
            ' "dev-only-desk-walikota": {"office_code": "31.71", "office_level": "kota"},'
            ' "dev-only-desk-balaikota": {"office_code": "31", "office_level": "balaikota"},'
            ' "dev-only-desk-inspektorat": {"office_code": "31", "office_level": "inspektorat"}}'
        ),
        description="JSON map: desk API token -> {office_code (Kemendagri), office_level}",
    )

    # Poll channels (issue #3): runner, X/Twitter, SP4N-LAPOR!. Cursors live in Redis (see sources/poller.py).
    poll_lease_s: float = Field(120.0, ge=5, description="one poller per channel: lease held while polling")
    poll_backoff_max_s: float = Field(300.0, ge=1, description="longest wait after repeated poll failures")
    twitter_api_base: str = Field(
        "https://api.twitter.com", description="X API v2 host (tests: a local server)"
    )
    twitter_bearer_token: SecretStr = Field(
        SecretStr(""),
        description="OAuth 2.0 user-context token of @DKIJakarta (tweet.read users.read dm.read)",
    )
    twitter_user_id: str = Field(
        "", description="numeric id of @DKIJakarta; looked up with /2/users/me if empty"
    )
    twitter_poll_interval_s: float = Field(60.0, ge=0.05)
    twitter_max_pages: int = Field(10, ge=1, description="pages of 100 per poll before the rest waits")
    twitter_poll_dms: bool = True
    lapor_api_base: str = Field("https://api.lapor.go.id", description="SP4N-LAPOR! integration API base URL")
    lapor_token: SecretStr = SecretStr("dev-only-lapor-token")
    lapor_token_header: str = "X-Lapor-Token"  # noqa: S105 - a header name, not a secret
    lapor_poll_interval_s: float = Field(60.0, ge=0.05)
    lapor_page_size: int = Field(100, ge=1, le=500)

    # Email gateway (issue #3): inbound SMTP from the city's mail relay, acknowledgements out via a relay.
    email_smtp_host: str = "127.0.0.1"
    email_smtp_port: int = 2525
    email_max_bytes: int = Field(
        900_000, ge=10_000, description="largest message taken (raw topic record cap)"
    )
    email_allowed_relays: str = Field(
        "127.0.0.1/32,::1/128", description="CIDRs allowed to deliver, comma list"
    )
    email_recipients: str = Field("dki@jakarta.go.id", description="addresses accepted, comma list")
    # The notifier's acknowledgement (with the tracking number, threaded to the citizen's mail) is the
    # one citizens get; the gateway's own immediate receipt is for deployments without the notifier.
    email_ack_enabled: bool = False
    email_ack_from: str = "dki@jakarta.go.id"
    email_relay_host: str = "127.0.0.1"
    email_relay_port: int = 25
    email_relay_starttls: bool = False
    email_relay_username: str | None = None
    email_relay_password: SecretStr | None = None
    email_relay_timeout_s: float = Field(30.0, gt=0)

    # Status lifecycle, citizen notifications and the consumer API (issue #4).
    status_group_id: str = Field("crm-status", description="consumer group of the status-event service")
    escalation_interval_s: float = Field(300.0, gt=0, description="how often overdue reports are checked")
    notify_interval_s: float = Field(5.0, gt=0, description="how often the outbox runner looks for due rows")
    notify_batch_size: int = Field(100, ge=1)
    notify_retry_first_s: float = Field(300.0, ge=0, description="after a first failure: retry in 5 min")
    notify_retry_every_s: float = Field(1800.0, gt=0, description="then every 30 min (the cap)")
    notify_max_attempts: int = Field(48, ge=1, description="then the row is marked failed for a person")
    notify_db_role: str | None = Field("crm_notifier", description="role the notifier SETs (contacts reader)")
    notify_email_enabled: bool = True
    notify_sms_url: str = Field("http://127.0.0.1:8089/v1/send", description="SMS gateway send API (POST)")
    notify_sms_token: SecretStr = SecretStr("dev-only-sms-send-token")
    notify_twitter_api_base: str = Field("https://api.twitter.com", description="X API host for replies/DMs")
    notify_twitter_token: SecretStr = SecretStr("")
    notify_meta_graph_base: str = Field("https://graph.facebook.com", description="Graph API host")
    notify_meta_graph_version: str = "v19.0"
    notify_meta_page_token: SecretStr = SecretStr("")
    api_host: str = "127.0.0.1"
    api_port: int = 8091
    api_db_role: str | None = Field("crm_api", description="role the read API SETs (no contacts)")
    api_keys: SecretStr = Field(
        SecretStr(
            '{"dev-only-open311-public": {"consumer": "public", "scopes": ["open311:read"]},'
            ' "dev-only-open311-bina-marga": {"consumer": "bina_marga", "scopes": ["open311:read",'
            ' "open311:private", "status:write"], "agencies": ["Dinas Bina Marga"]},'
            ' "dev-only-officer": {"consumer": "officer", "scopes": ["open311:read", "open311:private",'
            ' "status:write", "desk:read", "media:read"]},'
            ' "dev-only-crm-supervisor": {"consumer": "crm_supervisor", "scopes": ["open311:read",'
            ' "open311:private", "status:write", "media:read", "media:original"]},'
            ' "dev-only-open311-submit": {"consumer": "integrator", "scopes": ["open311:read",'
            ' "open311:submit"]}}'
        ),
        description="JSON map: API key -> {consumer, scopes, agencies (omit = all)} (docs/consumers.md)",
    )
    # Open311 reads without a key (issue #18): public fields only, a token bucket per client IP.
    open311_public_per_min: float = Field(
        120.0, ge=0, description="unkeyed Open311 reads per client per minute"
    )
    open311_public_burst: int = Field(60, ge=1, description="unkeyed Open311 reads a client may make at once")

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> Settings:
        if self.env == "production" and self.chaos_poison_marker:
            raise ValueError(
                "CRM_CHAOS_POISON_MARKER is a fault-injection hook; it must not be set in production"
            )
        if self.env == "production":
            used = [
                name
                for name, value in (
                    ("CRM_REPORTER_ID_KEY", self.reporter_id_key.get_secret_value()),
                    ("CRM_DATABASE_URL", self.database_url.get_secret_value()),
                    ("CRM_JAKI_TOKEN", self.jaki_token.get_secret_value()),
                    ("CRM_FACEBOOK_APP_SECRET", self.facebook_app_secret.get_secret_value()),
                    ("CRM_FACEBOOK_VERIFY_TOKEN", self.facebook_verify_token.get_secret_value()),
                    ("CRM_GOVERNOR_SOCIAL_APP_SECRET", self.governor_social_app_secret.get_secret_value()),
                    (
                        "CRM_GOVERNOR_SOCIAL_VERIFY_TOKEN",
                        self.governor_social_verify_token.get_secret_value(),
                    ),
                    ("CRM_SMS_TWILIO_AUTH_TOKEN", self.sms_twilio_auth_token.get_secret_value()),
                    ("CRM_SMS_GATEWAY_SECRET", self.sms_gateway_secret.get_secret_value()),
                    ("CRM_DESK_CREDENTIALS", self.desk_credentials.get_secret_value()),
                    ("CRM_LAPOR_TOKEN", self.lapor_token.get_secret_value()),
                    ("CRM_NOTIFY_SMS_TOKEN", self.notify_sms_token.get_secret_value()),
                    ("CRM_API_KEYS", self.api_keys.get_secret_value()),
                    ("CRM_CONTACT_ENCRYPTION_KEY", self.contact_encryption_key.get_secret_value()),
                    ("CRM_MEDIA_S3_SECRET_KEY", self.media_s3_secret_key.get_secret_value()),
                )
                if any(secret in value for secret in DEV_SECRETS)
            ]
            if self.kafka_sasl_password is not None and (
                self.kafka_sasl_password.get_secret_value() in DEV_KAFKA_PASSWORDS
            ):
                used.append("CRM_KAFKA_SASL_PASSWORD")
            if len(self.contact_encryption_key.get_secret_value()) < 32:
                used.append("CRM_CONTACT_ENCRYPTION_KEY (needs 32 random bytes, base64)")
            if used:
                raise ValueError(
                    f"refusing to start in production with development secrets: {', '.join(used)}"
                )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
