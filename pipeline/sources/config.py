"""Declared settings of a channel (an adapter or a reply sender): typed, secrets masked, checked on start.

A channel declares its own settings as a subclass of :class:`ChannelSettings` with its environment
prefix, so a deployment stays described by ``CRM_*`` variables alone::

    class WhatsAppSettings(ChannelSettings):
        model_config = SettingsConfigDict(env_prefix="CRM_WHATSAPP_", extra="ignore")
        app_secret: SecretStr = SecretStr("dev-only-whatsapp-app-secret")
        graph_base: str = "https://graph.facebook.com"

and names it on its class (``settings_model = WhatsAppSettings``). What the core then does for it:

* reads it from the environment (and ``CRM_<NAME>_FILE`` files, as for the core's own secrets);
* validates it when the process starts (a wrong type or value stops the ingress or the notifier with
  the variable's name, instead of failing on the first message);
* refuses to start with ``CRM_ENV=production`` while a secret field still holds a development value
  (one containing ``dev-only-``) or is empty;
* masks secret fields (``SecretStr``) in logs and in ``crm-pipeline channels --config``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..secret_files import FileSecretsSource
from ..settings import DEV_SECRETS, Settings

MASK = "********"


class ChannelSettingsError(RuntimeError):
    """A channel's settings are invalid, or hold development secrets in production."""


class ChannelSettings(BaseSettings):
    """Base of a channel's declared settings; subclasses set ``env_prefix`` (``CRM_<CHANNEL>_``)."""

    model_config = SettingsConfigDict(env_prefix="CRM_", extra="ignore")

    #: fields that are secrets although not typed ``SecretStr`` (prefer ``SecretStr``)
    secret_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        prefix = str(cls.model_config.get("env_prefix") or "")
        files = FileSecretsSource(settings_cls, prefix=prefix)
        return init_settings, env_settings, files, dotenv_settings, file_secret_settings

    # -- what the core calls -------------------------------------------------------------------------
    @classmethod
    def load(cls, core: Settings, **overrides: Any) -> ChannelSettings:
        """Read, validate and (in production) refuse development secrets; errors name the variables."""
        try:
            loaded = cls(**overrides)
        except ValidationError as exc:
            problems = "; ".join(
                f"{cls.env_name(str(err['loc'][0]))}: {err['msg']}" if err["loc"] else err["msg"]
                for err in exc.errors()
            )
            raise ChannelSettingsError(f"{cls.__name__}: {problems}") from None
        loaded.check(core)
        return loaded

    def check(self, core: Settings) -> None:
        if core.env != "production":
            return
        bad = [
            self.env_name(name)
            for name in type(self).model_fields
            if self.is_secret(name) and _is_dev_value(self.plain(name))
        ]
        if bad:
            raise ChannelSettingsError(
                "production refuses development or empty secrets: set " + ", ".join(bad)
            )

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"{cls.model_config.get('env_prefix') or ''}{field}".upper()

    @classmethod
    def is_secret(cls, field: str) -> bool:
        info = cls.model_fields[field]
        return field in cls.secret_fields or _mentions_secret(info.annotation)

    def plain(self, field: str) -> str:
        value = getattr(self, field)
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")

    def listing(self) -> list[dict[str, Any]]:
        """One row per setting (env variable, type, value, default), secrets masked."""
        rows = []
        for name, info in type(self).model_fields.items():
            secret = self.is_secret(name)
            value = getattr(self, name)
            default = info.default
            rows.append(
                {
                    "setting": self.env_name(name),
                    "type": _type_name(info.annotation),
                    "secret": secret,
                    "value": (MASK if self.plain(name) else "") if secret else _jsonable(value),
                    "default": (MASK if secret else _jsonable(default)),
                    "is_default": value == default,
                    "description": info.description or "",
                }
            )
        return rows

    def __repr__(self) -> str:  # masked in logs whatever the field type
        shown = ", ".join(
            f"{name}={MASK if self.is_secret(name) else getattr(self, name)!r}"
            for name in type(self).model_fields
        )
        return f"{type(self).__name__}({shown})"

    __str__ = __repr__


def _is_dev_value(value: str) -> bool:
    return not value or any(secret in value for secret in DEV_SECRETS)


def _mentions_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_mentions_secret(arg) for arg in getattr(annotation, "__args__", ()) or ())


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
