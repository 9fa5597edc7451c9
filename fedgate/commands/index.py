"""``fedgate index``: the site's findings index.

``fedgate index sync --config gateway.yaml`` rebuilds it from the PACS (``pacs.url``, or
``--pacs URL``); it resumes an interrupted sync unless ``--full``. ``fedgate index show``
prints how many studies, series, reports and findings it holds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.database_wait import connection_failure, describe
from gateway.index import FindingsIndex
from gateway.settings import ConfigError, load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sync = actions.add_parser("sync", help="rebuild the index from the PACS (QIDO-RS + WADO-RS)")
    sync.add_argument("--config", type=Path, help="the gateway's YAML file")
    sync.add_argument("--pacs", help="DICOMweb root to crawl (default: pacs.url)")
    sync.add_argument("--full", action="store_true", help="crawl every study again")
    sync.add_argument("--quiet", action="store_true", help="no progress bar")
    show = actions.add_parser("show", help="print what the index holds")
    show.add_argument("--config", type=Path, help="the gateway's YAML file")


class ProgressBar:
    """A one-line text progress bar on stderr, redrawn in place."""

    def __init__(self, label: str, width: int = 30):
        self.label = label
        self.width = width

    def __call__(self, done: int, total: int) -> None:
        filled = self.width * done // max(total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{self.label} [{bar}] {done}/{total} studies{end}")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"fedgate index: {error}", file=sys.stderr)
        return 2
    try:
        index = FindingsIndex.open(settings.index, settings.data_dir)
    except Exception as error:
        # A command does not wait for its database (the gateway does, docs/operations.md):
        # it says why it could not open it, without a traceback.
        failure = connection_failure(error)
        if failure is None or settings.index.url is None:
            raise
        print(
            f"fedgate index: index.url ({describe(settings.index.url)}): {failure.reason}: "
            f"{failure.detail}",
            file=sys.stderr,
        )
        return 2 if failure.permanent else 1
    try:
        if args.action == "show":
            for table, count in index.counts().items():
                print(f"{table:>13}: {count}")
            return 0
        return _sync(args, settings, index)
    finally:
        index.close()


def _sync(args: argparse.Namespace, settings: object, index: FindingsIndex) -> int:
    from dicomweb_client.api import DICOMwebClient

    from gateway.index.sync import sync_index
    from gateway.settings import GatewaySettings
    from serviceconfig import BasicAuth, BearerAuth

    assert isinstance(settings, GatewaySettings)
    url = args.pacs or settings.pacs.url
    if not url:
        print("fedgate index sync: no PACS to crawl (set pacs.url or give --pacs)", file=sys.stderr)
        return 2
    headers = {}
    auth = settings.pacs.auth
    if isinstance(auth, BearerAuth):
        headers["Authorization"] = f"Bearer {auth.token.get_secret_value()}"
    elif isinstance(auth, BasicAuth):
        import base64

        pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    client = DICOMwebClient(url, headers=headers)
    progress = None if args.quiet else ProgressBar("index sync")
    report = sync_index(index, client, resume=not args.full, progress=progress)
    print(
        f"studies: {report.studies_found} found, {report.studies_synced} indexed, "
        f"{report.studies_skipped} already indexed; series: {report.series}; "
        f"SR instances read: {report.reports}; failures: {len(report.failures)}"
    )
    for failure in report.failures:
        print(f"  {failure}", file=sys.stderr)
    return 1 if report.failures else 0
