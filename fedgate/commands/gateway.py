"""``fedgate gateway --config FILE``: serve the gateway."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog
import uvicorn

from gateway.app import create_app
from gateway.intake.settings import is_loopback
from gateway.settings import ConfigError, load_settings
from observability import configure_logging
from tlsconfig import uvicorn_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML settings file (env FEDGATE_* overrides)")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"fedgate gateway: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log.level, settings.log.json_output)
    log = structlog.get_logger("fedgate.gateway")
    host = settings.listen.host
    if not settings.auth.enabled and not is_loopback(host):
        # Without authentication, nobody but this machine may talk to the gateway.
        log.warning(
            "auth.disabled_loopback_only",
            requested_host=host,
            message="no auth.clients configured: listening on 127.0.0.1 only",
        )
        host = "127.0.0.1"
        # The app's own URL and its start log line say where it really listens.
        settings = settings.model_copy(
            update={"listen": settings.listen.model_copy(update={"host": host})}
        )
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=settings.listen.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        **uvicorn_options(settings.listen.tls),
    )
    return 0
