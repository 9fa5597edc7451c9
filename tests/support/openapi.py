"""Holding a live app to its OpenAPI document: every route documented, every answer declared."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Mount, Route

OPENAPI_DIR = Path(__file__).resolve().parents[2] / "openapi"
_METHODS = {"get", "post", "put", "delete", "patch"}


def load_spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((OPENAPI_DIR / name).read_text())
    validate(spec)  # a valid OpenAPI 3.1 document, or this raises naming the problem
    return spec


def documented_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in _METHODS
    }


def app_operations(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path template) of every route, with Starlette converters stripped."""
    operations: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount):
            operations |= app_operations(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)
            for method in route.methods or ():
                if method != "HEAD":
                    operations.add((method, path))
    return operations


def _match(spec: dict[str, Any], path: str) -> tuple[str, dict[str, Any]]:
    for template, item in spec["paths"].items():
        pattern = "^" + re.sub(r"\\\{\w+\\\}", r"[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template, item
    raise AssertionError(f"{path} is not in the OpenAPI document")


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def assert_documented(spec: dict[str, Any], response: httpx.Response, prefix: str = "") -> None:
    """The response's status and media type are declared for its operation."""
    method = response.request.method.lower()
    template, item = _match(spec, prefix + response.request.url.path)
    operation = item.get(method)
    assert operation is not None, f"{method.upper()} {template} is not documented"
    declared = operation["responses"].get(str(response.status_code))
    assert declared is not None, (
        f"{method.upper()} {template} answered {response.status_code}, which is not documented"
    )
    content = _resolve(spec, declared).get("content")
    if content and response.content:
        media = response.headers.get("content-type", "").split(";")[0].strip()
        assert media in content, f"{method.upper()} {template} {response.status_code}: {media}"
