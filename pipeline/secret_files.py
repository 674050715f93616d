"""Secrets in files: ``CRM_<NAME>_FILE=/run/secrets/x`` reads the value of ``CRM_<NAME>`` from that file
(Kubernetes/Docker secrets), so no secret has to sit in the environment or the repository.

A settings source of its own, imported by :mod:`pipeline.settings` and importing nothing of the package,
so settings and the security helpers (which take a :class:`~pipeline.settings.Settings`) do not import
each other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource


class FileSecretsSource(PydanticBaseSettingsSource):
    """``CRM_<FIELD>_FILE``: the field's value is the content of that file (trailing newline dropped).

    The plain ``CRM_<FIELD>`` variable wins when both are set; a named file that cannot be read stops
    the process (a secret silently missing would fall back to a development default).
    """

    def __init__(self, settings_cls: type[BaseSettings], prefix: str = "CRM_") -> None:
        super().__init__(settings_cls)
        self.prefix = prefix

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = f"{self.prefix}{field_name}".upper()
        path = os.environ.get(f"{name}_FILE")
        if not path or name in os.environ:
            return None, field_name, False
        try:
            value = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{name}_FILE={path}: cannot read the secret file: {exc.strerror}") from None
        return value.rstrip("\r\n"), field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                out[key] = value
        return out
