"""``fedgate hub --config FILE``: ask many sites' ``/federated/v1`` at once, answer combined.

The config (YAML) lists the sites, their URLs and credentials, and who may ask the hub::

    listen: {host: 0.0.0.0, port: 8090}
    timeout_seconds: 10
    auth:
      clients: [{name: analyst, token_sha256: "<sha256 of the token>", roles: [query]}]
    sites:
      - {name: site-a, url: "https://gw.site-a.example/federated/v1", token: "..."}
      - {name: site-b, url: "https://gw.site-b.example/federated/v1", token: "...",
         timeout_seconds: 30}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog
import uvicorn
import yaml
from pydantic import ValidationError

from gateway.federated.hub import HubSettings, hub_app
from gateway.settings import describe_validation_error

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the hub's YAML file")


def run(args: argparse.Namespace) -> int:
    try:
        settings = HubSettings.load(args.config)
    except OSError as error:
        print(f"fedgate hub: cannot read {args.config}: {error.strerror}", file=sys.stderr)
        return 2
    except yaml.YAMLError as error:
        print(f"fedgate hub: {args.config} is not valid YAML: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:
        print(f"fedgate hub: {describe_validation_error(error)}", file=sys.stderr)
        return 2
    host = settings.listen.host
    if not settings.auth.enabled and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("hub.loopback_only", reason="no auth configured", requested_host=host)
        host = "127.0.0.1"
    elif not settings.auth.enabled:
        log.warning("hub.auth_off", reason="no auth configured: listening on loopback only")
    log.info("hub.start", host=host, port=settings.listen.port, sites=len(settings.sites))
    uvicorn.run(hub_app(settings), host=host, port=settings.listen.port, log_level="warning")
    return 0
