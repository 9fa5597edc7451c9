"""``fedgate hub --config FILE``: ask many sites' ``/federated/v1`` at once, answer combined.

The config (YAML) lists the sites, their URLs and credentials, and who may ask the hub::

    name: hub-eu                       # the issuer of its assertions, as the sites know it
    signing_key_file: /etc/fedgate/hub-signing-key.pem
    listen: {host: 0.0.0.0, port: 8090}
    timeout_seconds: 10
    auth:
      clients: [{name: alice-laptop, person: alice, token_sha256: "<sha256>", roles: [query]}]
    sites:
      - {name: site-a, url: "https://gw.site-a.example/federated/v1", token: "..."}
      - {name: site-b, url: "https://gw.site-b.example/federated/v1", token: "...",
         timeout_seconds: 30}

``fedgate hub keygen --out DIR`` writes the hub's Ed25519 key pair (``hub-signing-key.pem``, mode
0600, and ``hub-signing-key.pub``) and prints the public key for the sites' ``auth.hubs``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog
import uvicorn

from gateway.hub_assertion import write_key_pair
from hub.app import HubSettings, hub_app
from observability import configure_logging
from serviceconfig import ConfigError
from tlsconfig import uvicorn_options

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the hub's YAML file (serve the hub)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    keygen = actions.add_parser(
        "keygen", help="write the hub's signing key pair and print the public key for the sites"
    )
    keygen.add_argument("--out", type=Path, required=True, help="directory for the key pair")
    keygen.add_argument("--name", default="fedgate-hub", help="the hub's name (for the snippet)")


def keygen(args: argparse.Namespace) -> int:
    try:
        private_path, public_path = write_key_pair(args.out)
    except FileExistsError as error:
        print(
            f"fedgate hub keygen: {error.filename} exists; the sites trust that key "
            "(remove it first to replace it)",
            file=sys.stderr,
        )
        return 2
    except OSError as error:
        print(f"fedgate hub keygen: cannot write to {args.out}: {error.strerror}", file=sys.stderr)
        return 2
    public_key = public_path.read_text(encoding="utf-8")
    print(f"private key (keep secret, mode 0600): {private_path}")
    print(f"public key: {public_path}")
    print(f"\nIn the hub's YAML:\n  name: {args.name}\n  signing_key_file: {private_path}")
    print("\nAt each site (gateway YAML), with this site's name as the hub's sites[].name:")
    print(f"  auth:\n    hubs:\n      - name: {args.name}\n        audience: <site name>")
    print("        public_key: |")
    print("".join(f"          {line}\n" for line in public_key.splitlines()), end="")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        return keygen(args)
    if args.config is None:
        print("fedgate hub: --config FILE is required (or: fedgate hub keygen)", file=sys.stderr)
        return 2
    try:
        settings = HubSettings.load(args.config)
    except ConfigError as error:
        print(f"fedgate hub: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log.level, settings.log.json_output)
    try:
        settings.signing_key()
    except ValueError as error:
        print(f"fedgate hub: signing_key_file: {error}", file=sys.stderr)
        return 2
    if settings.signing_key_file is None:
        log.warning(
            "hub.no_signing_key",
            reason="sites see the hub's credential, not the analyst: set signing_key_file",
        )
    host = settings.listen.host
    if not settings.auth.enabled and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("hub.loopback_only", reason="no auth configured", requested_host=host)
        host = "127.0.0.1"
    elif not settings.auth.enabled:
        log.warning("hub.auth_off", reason="no auth configured: listening on loopback only")
    log.info("hub.start", host=host, port=settings.listen.port, sites=len(settings.sites))
    uvicorn.run(
        hub_app(settings),
        host=host,
        port=settings.listen.port,
        log_level="warning",
        **uvicorn_options(settings.listen.tls),
    )
    return 0
