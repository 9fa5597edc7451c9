"""A service's settings file: YAML read into a mapping, the environment over it, and pydantic's
validation errors as one line naming each key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key or file."""


def read_settings_file(path: Path | None) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (empty for an empty file or no path), or
    ConfigError saying why not: unreadable, not YAML, not a mapping."""
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


class EnvironmentFirst(BaseSettings):
    """Settings whose environment variables win over the file (passed as keyword arguments),
    which wins over the defaults: an operator overrides one key of a shipped file without
    editing it (a container's ``FEDGATE_LISTEN__PORT``)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


def describe_validation_error(error: ValidationError, data: Any = None) -> str:
    """``key: reason`` for each problem, joined by ``; ``, e.g. ``listen.port: Input should be
    less than or equal to 65535``. Given the ``data`` validated, an item of a list of named
    mappings is called by its ``name`` (``routing[chest-ct].match.Modality``, not
    ``routing.0.match.Modality``), the way the file's reader knows it."""
    problems = []
    for problem in error.errors():
        parts: list[str] = []
        value = data
        for part in problem["loc"]:
            if isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value):
                value = value[part]
                if isinstance(value, dict) and "name" in value and parts:
                    parts[-1] += f"[{value['name']}]"
                    continue
            else:
                value = value.get(part) if isinstance(value, dict) else None
            parts.append(str(part))
        problems.append(f"{'.'.join(parts) or '(top level)'}: {problem['msg']}")
    return "; ".join(problems)
