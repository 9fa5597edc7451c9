"""``fedgate gateway --config FILE``: serve the gateway."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog
import uvicorn

from gateway.app import create_app
from gateway.database_health import configured_databases
from gateway.database_wait import DatabaseUnavailable, connection_failure, wait_for_databases
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
    databases = configured_databases(settings)
    if databases:
        # Before anything opens them: the database may come up after the gateway.
        try:
            wait_for_databases(databases, settings.database_wait_seconds)
        except DatabaseUnavailable as error:
            print(f"fedgate gateway: {error}", file=sys.stderr)
            return error.exit_status
    try:
        app = create_app(settings)
    except Exception as error:
        # Reached a moment ago, lost while opening (a failover just then): said in words too.
        failure = connection_failure(error)
        if failure is None:
            raise
        log.error("database.lost", reason=failure.reason, detail=failure.detail)
        print(f"fedgate gateway: database: {failure.reason}: {failure.detail}", file=sys.stderr)
        return 2 if failure.permanent else 1
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
