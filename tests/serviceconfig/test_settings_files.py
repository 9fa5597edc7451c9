"""serviceconfig: the settings file every service reads, and the words for what is wrong in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsConfigDict

from serviceconfig import (
    BearerAuth,
    ConfigError,
    EnvironmentFirst,
    PeerAuth,
    describe_validation_error,
    read_settings_file,
)


def test_a_settings_file_is_a_mapping_or_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    with pytest.raises(ConfigError, match=f"cannot read config file {path}: No such file"):
        read_settings_file(path)
    path.write_text("listen: [unclosed")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        read_settings_file(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping at the top level"):
        read_settings_file(path)
    path.write_text("")
    assert read_settings_file(path) == {}
    assert read_settings_file(None) == {}
    path.write_text("listen: {port: 8080}\n")
    assert read_settings_file(path) == {"listen": {"port": 8080}}


class Rule(BaseModel):
    name: str | None = None
    port: int


class Peer(BaseModel):
    url: str
    auth: PeerAuth | None = None


class Settings(BaseModel):
    rules: list[Rule] = []
    ports: list[int] = []
    peer: Peer | None = None


def _described(data: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate(data)
    return describe_validation_error(raised.value, data)


def test_a_problem_names_its_key_and_a_list_item_by_its_name_or_place() -> None:
    described = _described(
        {"rules": [{"name": "chest", "port": "x"}, {"port": "y"}], "ports": [1, "z"]}
    )
    assert described == (
        "rules[chest].port: Input should be a valid integer, unable to parse string as an "
        "integer; rules.1.port: Input should be a valid integer, unable to parse string as "
        "an integer; ports.1: Input should be a valid integer, unable to parse string as an "
        "integer"
    )
    # Without the data: the places pydantic gives.
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate({"rules": [{"name": "chest", "port": "x"}]})
    assert describe_validation_error(raised.value).startswith("rules.0.port: ")
    assert _described({"peer": {"url": "u", "auth": {"type": "bearer"}}}).startswith(
        "peer.auth.bearer.token: Field required"
    )
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate([])
    assert describe_validation_error(raised.value, []).startswith("(top level): ")


def test_peer_credentials_are_basic_or_bearer_and_keep_their_secret() -> None:
    peer = Peer.model_validate({"url": "u", "auth": {"type": "bearer", "token": "s3cret"}})
    assert isinstance(peer.auth, BearerAuth)
    assert "s3cret" not in repr(peer) and peer.auth.token.get_secret_value() == "s3cret"
    with pytest.raises(ValidationError, match="expected tags: 'basic', 'bearer'"):
        Peer.model_validate({"url": "u", "auth": {"type": "digest"}})


class Service(EnvironmentFirst):
    model_config = SettingsConfigDict(env_prefix="TEST_SERVICE_", env_nested_delimiter="__")
    port: int = 1
    host: str = "127.0.0.1"


def test_the_environment_wins_over_the_file_which_wins_over_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_SERVICE_PORT", "9")
    settings = Service(**{"port": 8, "host": "0.0.0.0"})
    assert (settings.port, settings.host) == (9, "0.0.0.0")
    monkeypatch.delenv("TEST_SERVICE_PORT")
    assert Service().port == 1
