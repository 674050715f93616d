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

import sys
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..secret_files import FileSecretsSource
from ..settings import DEV_SECRETS, Settings

MASK = "********"


class ChannelSettingsError(RuntimeError):
    """A channel's settings are invalid, or hold development secrets in production."""


class ChannelSettings(BaseSettings):
    """Base of a channel's declared settings; subclasses set ``env_prefix`` (``CRM_<CHANNEL>_``)."""

    model_config = SettingsConfigDict(env_prefix="CRM_", extra="ignore", populate_by_name=True)

    #: fields that are secrets although not typed ``SecretStr`` (prefer ``SecretStr``)
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    #: secrets that may stay empty in production (what they enable is then off, e.g. relay login)
    optional_secrets: ClassVar[frozenset[str]] = frozenset()

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
        loaded = cls.read(core, **overrides)
        loaded.check(core)
        return loaded

    @classmethod
    def read(cls, core: Settings, **overrides: Any) -> ChannelSettings:
        """Read and validate, without the production check (``channels --config`` lists what is refused).

        A setting whose variable the core settings declare too (the built-in channels' ``CRM_JAKI_TOKEN``,
        ``CRM_SMS_GATEWAY_SECRET``, …) takes the core's value, so the two can never disagree (and a
        ``Settings`` object built in code, as tests do, is what the adapter sees)."""
        shared = {
            name: getattr(core, core_name)
            for name in cls.model_fields
            if name not in overrides
            and (core_name := cls.env_name(name).removeprefix("CRM_").lower()) in type(core).model_fields
        }
        try:
            loaded = cls(**shared, **overrides)
        except ValidationError as exc:
            problems = "; ".join(
                f"{cls.env_name(str(err['loc'][0]))}: {err['msg']}" if err["loc"] else err["msg"]
                for err in exc.errors()
            )
            raise ChannelSettingsError(f"{cls.__name__}: {problems}") from None
        return loaded

    def check(self, core: Settings) -> None:
        if core.env != "production":
            return
        bad = [
            self.env_name(name)
            for name in type(self).model_fields
            if self.is_secret(name)
            and _is_dev_value(self.plain(name), optional=name in self.optional_secrets)
        ]
        if bad:
            raise ChannelSettingsError(
                "production refuses development or empty secrets: set " + ", ".join(bad)
            )

    @classmethod
    def env_name(cls, field: str) -> str:
        """The variable a field is read from: ``<env_prefix><FIELD>``, or its ``validation_alias``
        (for a setting shared by several channels, e.g. ``CRM_META_REPLAY_WINDOW_S``)."""
        info = cls.model_fields.get(field)
        if info is None and field.upper().startswith("CRM_"):
            return field.upper()  # already an alias (a validation error names the alias)
        alias = info.validation_alias if info is not None else None
        if isinstance(alias, str):
            return alias.upper()
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
            f"{name}={MASK if self.is_secret(name) and self.plain(name) else getattr(self, name)!r}"
            for name in type(self).model_fields
        )
        return f"{type(self).__name__}({shown})"

    __str__ = __repr__


def core_view(
    name: str,
    prefix: str,
    fields: Sequence[str],
    shared: Iterable[str] = (),
    optional_secrets: Iterable[str] = (),
) -> type[ChannelSettings]:
    """The declared settings of a built-in channel: the core settings it uses, seen as its own.

    The built-in channels' variables (``CRM_JAKI_TOKEN``, ``CRM_SMS_*``, …) are declared once, in
    :class:`~pipeline.settings.Settings`; this view copies their types, defaults, limits and descriptions
    under the channel's prefix (``fields``: core names starting with it), plus ``shared`` core settings
    under their own variable (``CRM_META_REPLAY_WINDOW_S`` for both Meta channels), so the channel lists,
    masks and checks them like a plug-in's, and :meth:`ChannelSettings.load` fills them from the core.
    """
    stem = prefix.removeprefix("CRM_").lower()
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {}
    for core_name in [*fields, *shared]:
        info = Settings.model_fields[core_name]
        if core_name in shared:
            short, info = (
                core_name,
                FieldInfo.merge_field_infos(info, validation_alias=f"CRM_{core_name.upper()}"),
            )
        elif core_name.startswith(stem):
            short = core_name.removeprefix(stem)
        else:
            raise ValueError(f"{core_name} is not a {prefix}* setting; name it in shared")
        annotations[short] = info.annotation
        namespace[short] = info
    caller = sys._getframe(1).f_globals.get("__name__", __name__)
    namespace |= {
        "__annotations__": annotations,
        "__module__": caller,
        "__doc__": f"Declared settings of the channel: {prefix}* (a view of the core settings).",
        "model_config": SettingsConfigDict(env_prefix=prefix, extra="ignore"),
        "optional_secrets": frozenset(optional_secrets),
    }
    return type(name, (ChannelSettings,), namespace)


def _is_dev_value(value: str, optional: bool = False) -> bool:
    if not value:
        return not optional
    return any(secret in value for secret in DEV_SECRETS)


def _mentions_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_mentions_secret(arg) for arg in getattr(annotation, "__args__", ()) or ())


def _type_name(annotation: Any) -> str:
    args = getattr(annotation, "__args__", None)
    if args and type(annotation).__name__ in ("UnionType", "_UnionGenericAlias"):
        return " | ".join("None" if a is type(None) else _type_name(a) for a in args)
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
