"""``fedgate doctor``: check a gateway's deployment and say what is wrong, in words.

Each check yields :class:`Finding` lines (ok, warning or problem, plus what to do). The checks
read the gateway's settings file and then ask what it names, as the gateway would at run time:
the upstream PACS (a QIDO-RS search, DICOM PS3.18 10.6, ``/studies?limit=1``; its HTTP ``Date``
header, RFC 9110 6.6.1, for the clock, or Orthanc's ``/tools/now`` since Orthanc sends no
``Date``), each inference service's model list (``/v1/models``)
against the models routing rules name, the credentials, ``data_dir`` (writable, free space) and
the DIMSE port (DICOM PS3.8). Nothing is changed, nothing is sent but those requests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import errno
import hashlib
import os
import shutil
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from gateway.app import MIN_FREE_BYTES
from gateway.database_health import configured_databases
from gateway.database_wait import classify, describe
from gateway.intake.settings import is_loopback
from gateway.pacs import _auth_headers, _basic_auth
from gateway.pipeline.served_models import served_models
from gateway.settings import ConfigError, GatewaySettings, load_settings
from tlsconfig import ClientTls, client_context

Status = Literal["ok", "warning", "problem"]

#: Clock skew against the PACS beyond which the stability timers and leases may misjudge.
MAX_CLOCK_SKEW_SECONDS = 60.0
#: Below MIN_FREE_BYTES the gateway reports itself unready; below this share of the
#: filesystem the FedgateDiskNearlyFull alert fires.
MIN_FREE_SHARE = 0.10
#: How long one network check waits.
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Finding:
    """One line of the report: which check, how it went, and what to do."""

    check: str
    status: Status
    message: str

    def line(self) -> str:
        return f"{self.status:<8} {self.check}: {self.message}"


Progress = Callable[[str], None]


def diagnose(config: Path, progress: Progress = lambda _: None) -> Iterator[Finding]:
    """Every finding about the deployment ``config`` describes, in the order checked."""
    try:
        settings = load_settings(config)
    except ConfigError as error:
        yield Finding("settings", "problem", f"{error}; fix the file and run doctor again")
        return
    yield Finding(
        "settings",
        "ok",
        f"{config} loads ({len(settings.routing)} routing rule(s), "
        f"PACS: {settings.pacs.url or 'none, the embedded store'})",
    )
    if settings.pacs.url:
        progress(f"asking the PACS at {settings.pacs.url} (QIDO-RS /studies?limit=1)")
    pacs_clock = yield from check_pacs(settings)
    yield check_clock(pacs_clock, settings)
    yield from check_auth(settings)
    yield from check_routing(settings)
    if settings.routing:
        progress("asking the inference services for their models")
        yield from check_inference(settings)
    databases = configured_databases(settings)
    if databases:
        progress("connecting to PostgreSQL (" + ", ".join(databases) + ")")
    yield from check_databases(databases)
    yield from check_data_dir(settings.data_dir)
    if settings.dimse.enabled:
        yield check_dimse_port(settings.dimse.host, settings.dimse.port)


@dataclass(frozen=True)
class PacsClock:
    """The PACS's time as read at ``read_at`` (this host's clock), and where it was read."""

    seconds: float
    read_at: float
    source: str


def check_pacs(settings: GatewaySettings) -> Generator[Finding, None, PacsClock | None]:
    """QIDO-RS ``/studies?limit=1`` at ``pacs.url``; returns (as the generator's value) the
    PACS's clock, for the clock check, when it answered."""
    url = settings.pacs.url
    if url is None:
        yield Finding("pacs", "ok", "no pacs.url: the embedded store is the PACS")
        return None
    client = httpx.Client(
        auth=_basic_auth(settings.pacs),
        headers={**_auth_headers(settings.pacs), "Accept": "application/dicom+json"},
        timeout=httpx.Timeout(TIMEOUT_SECONDS, connect=settings.pacs.connect_timeout_seconds),
        follow_redirects=False,
        verify=client_context(settings.pacs.tls),  # as the gateway itself reaches it
    )
    with client:
        try:
            response = client.get(f"{url}/studies", params={"limit": "1"})
        except httpx.TimeoutException as error:
            yield Finding(
                "pacs",
                "problem",
                f"{url} did not answer within {TIMEOUT_SECONDS:g} s ({type(error).__name__}): "
                "is the PACS overloaded, or a firewall dropping packets?",
            )
            return None
        except httpx.TransportError as error:
            yield _transport_problem(url, error)
            return None
        yield _judge_qido(url, response, settings)
        return _pacs_clock(client, url, response)


def _pacs_clock(client: httpx.Client, url: str, response: httpx.Response) -> PacsClock | None:
    """The PACS's time: its HTTP ``Date`` header (RFC 9110 6.6.1: servers with a clock send
    it), else Orthanc's REST ``/tools/now`` (UTC, ``YYYYMMDDTHHMMSS``) beside its DICOMweb root,
    since Orthanc (1.10) sends no ``Date``."""
    read_at = time.time()
    date = response.headers.get("date")
    if date:
        try:
            seconds = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return None
        return PacsClock(seconds, read_at, "its HTTP Date header")
    if not url.endswith("/dicom-web"):
        return None
    try:
        now = client.get(url.removesuffix("/dicom-web") + "/tools/now")
        read_at = time.time()
        stamp = dt.datetime.strptime(now.text.strip(), "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    except (httpx.HTTPError, ValueError):
        return None
    return PacsClock(stamp.timestamp(), read_at, "Orthanc's /tools/now")


def _transport_problem(url: str, error: httpx.TransportError) -> Finding:
    tls = _tls_error(error)
    if tls is not None:
        return Finding(
            "pacs",
            "problem",
            f"TLS with {url} failed ({tls}): its certificate is not trusted here (a private "
            "CA or self-signed: set pacs.tls.ca to that CA, docs/tls.md), names another host, "
            "or the port does not speak TLS",
        )
    if isinstance(error, httpx.ReadError | httpx.RemoteProtocolError) and url.startswith("http://"):
        # Connected, then dropped without an HTTP answer: what a TLS server does to plain HTTP.
        return Finding(
            "pacs",
            "problem",
            f"{url} accepted the connection but dropped it without an HTTP answer ({error}): "
            "a TLS port spoken to without TLS? Try https:// in pacs.url",
        )
    return Finding(
        "pacs",
        "problem",
        f"cannot connect to {url} ({error or type(error).__name__}): is the PACS running, and "
        "are pacs.url's host and port right?",
    )


def _tls_error(error: BaseException) -> str | None:
    """The TLS failure behind a transport error, if it is one (httpx wraps ssl's errors)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return (
                getattr(seen, "verify_message", None) or getattr(seen, "reason", None) or str(seen)
            )
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    return text if "SSL" in text or "certificate" in text.lower() else None


def _judge_qido(url: str, response: httpx.Response, settings: GatewaySettings) -> Finding:
    status = response.status_code
    server = response.headers.get("server")
    who = f" ({server})" if server else ""
    if status in (401, 403):
        if settings.pacs.auth is None:
            return Finding(
                "pacs",
                "problem",
                f"{url} answered {status}{who}: the PACS asks for credentials and pacs.auth "
                "is not set; add {type: basic, username, password} or {type: bearer, token}",
            )
        return Finding(
            "pacs",
            "problem",
            f"{url} answered {status}{who}: the PACS refused our credentials; check "
            f"pacs.auth ({settings.pacs.auth.type}) and that this user may use DICOMweb",
        )
    if status in (400, 404, 405):
        # Any QIDO-RS service answers a plain search for studies with ``limit`` (PS3.18 8.3.4);
        # Orthanc's REST API answers the same path with 400.
        return Finding(
            "pacs",
            "problem",
            f"{url}/studies?limit=1 answered {status}{who}: pacs.url is not a DICOMweb root "
            "(Orthanc's ends in /dicom-web, dcm4chee's in /dcm4chee-arc/aets/<AET>/rs)",
        )
    if status == 204:
        return Finding("pacs", "ok", f"{url} answers QIDO-RS{who}: no study yet")
    if status != 200:
        return Finding(
            "pacs",
            "problem",
            f"{url} answered QIDO-RS with {status}{who}: see the PACS's log",
        )
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        studies = response.json()
    except ValueError:
        studies = None
    if not isinstance(studies, list) or media_type not in (
        "application/dicom+json",
        "application/json",
    ):
        return Finding(
            "pacs",
            "problem",
            f"{url}/studies answered 200{who} with {media_type or 'no content type'}, not "
            "DICOM JSON: pacs.url is not a DICOMweb root (a web page or another API?)",
        )
    # Orthanc's own REST API answers /studies too, with a JSON list of its identifiers: DICOM
    # JSON (PS3.18 F.2) is a list of objects keyed by tags.
    if not all(isinstance(study, dict) for study in studies):
        return Finding(
            "pacs",
            "problem",
            f"{url}/studies answered a JSON list that is not DICOM JSON{who}: pacs.url is "
            "another API, not a DICOMweb root (Orthanc's DICOMweb root ends in /dicom-web)",
        )
    return Finding(
        "pacs", "ok", f"{url} answers QIDO-RS{who} ({len(studies)} study listed for limit=1)"
    )


def check_clock(clock: PacsClock | None, settings: GatewaySettings) -> Finding:
    """This host's clock against the PACS's (to the second, as HTTP dates are)."""
    if settings.pacs.url is None:
        return Finding("clock", "ok", "not compared: no upstream PACS")
    if clock is None:
        return Finding(
            "clock",
            "warning",
            "not compared: the PACS did not answer, or tells no time (no HTTP Date header)",
        )
    skew = clock.read_at - clock.seconds
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        ahead = "ahead of" if skew > 0 else "behind"
        return Finding(
            "clock",
            "warning",
            f"this host is {abs(skew):.0f} s {ahead} the PACS ({clock.source}): set up time "
            "synchronisation (NTP, chrony) on both; study dates, retention and job leases "
            "use wall time",
        )
    return Finding("clock", "ok", f"within {abs(skew):.0f} s of the PACS's ({clock.source})")


def check_auth(settings: GatewaySettings) -> Iterator[Finding]:
    """Credentials: the clients, the loopback rule and the inference service's callback token."""
    auth = settings.auth
    host = settings.listen.host
    if not auth.enabled:
        if is_loopback(host):
            yield Finding("auth", "ok", "no auth.clients: the gateway serves loopback only")
        else:
            yield Finding(
                "auth",
                "warning",
                f"listen.host is {host} but no auth.clients (nor auth.oidc) are configured: "
                "the gateway listens on loopback only; add auth.clients for other hosts",
            )
        return
    digests = [client.token_sha256 for client in auth.clients]
    shared = sorted({c.name for c in auth.clients if digests.count(c.token_sha256) > 1})
    if shared:
        yield Finding(
            "auth",
            "problem",
            f"clients {', '.join(shared)} have the same token: only the first is ever "
            "recognised; give each its own token",
        )
    names = [client.name for client in auth.clients]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        yield Finding(
            "auth",
            "warning",
            f"client name(s) used twice: {', '.join(twice)}: the audit log cannot tell them apart",
        )
    roleless = [client.name for client in auth.clients if not client.roles]
    if roleless:
        yield Finding(
            "auth",
            "warning",
            f"client(s) without a role, refused everywhere: {', '.join(roleless)}",
        )
    described = ", ".join(f"{c.name} ({'+'.join(c.roles)})" for c in auth.clients)
    yield Finding(
        "auth",
        "ok",
        f"{len(auth.clients)} client(s): {described}"
        + ("; OIDC tokens accepted" if auth.oidc is not None else ""),
    )
    if settings.routing and settings.pipeline.workers:
        token = settings.pipeline.callback_token
        if token is None:
            yield Finding(
                "auth",
                "problem",
                "auth is on but pipeline.callback_token is not set: the inference service "
                "cannot read series from the gateway nor store results; set it to an admin "
                "client's token",
            )
        else:
            digest = hashlib.sha256(token.get_secret_value().encode()).hexdigest()
            holders = [c for c in auth.clients if c.token_sha256 == digest]
            if not any("admin" in c.roles for c in holders):
                yield Finding(
                    "auth",
                    "problem",
                    "pipeline.callback_token is not the token of an admin client in "
                    "auth.clients: the inference service's reads and results will be refused",
                )


def check_routing(settings: GatewaySettings) -> Iterator[Finding]:
    """Rules (their names and keywords were validated on load) and the settings naming models."""
    rules = settings.routing
    if not rules:
        yield Finding(
            "routing",
            "warning",
            "no routing rules: studies are stored and indexed, nothing is analysed",
        )
        return
    models = {model for rule in rules for model in rule.models}
    unknown = sorted(set(settings.pipeline.concurrency) - models)
    if unknown:
        yield Finding(
            "routing",
            "warning",
            f"pipeline.concurrency names model(s) no routing rule uses: {', '.join(unknown)} "
            "(a typo? the default concurrency applies to the real name)",
        )
    yield Finding(
        "routing",
        "ok",
        f"{len(rules)} rule(s): "
        + "; ".join(f"{rule.name} -> {', '.join(rule.models)}" for rule in rules),
    )


def check_inference(settings: GatewaySettings) -> Iterator[Finding]:
    """Each inference service's model list against the models its rules name."""
    by_service: dict[str, list[str]] = {}
    for rule in settings.routing:
        by_service.setdefault(rule.inference_url, []).append(rule.name)
    answers = asyncio.run(_ask_services(list(by_service), settings.pipeline.inference_tls))
    for url, rule_names in by_service.items():
        served = answers[url]
        named = ", ".join(rule_names)
        if isinstance(served, Exception):
            yield Finding(
                "inference",
                "problem",
                f"{url} (rules {named}) cannot be asked for its models "
                f"({type(served).__name__}: {str(served)[:160]}): is the inference service "
                "running (fedgate inference), and is inference_url right?",
            )
            continue
        missing = False
        for rule in settings.routing:
            if rule.inference_url != url:
                continue
            for model in rule.models:
                if model not in served:
                    missing = True
                    yield Finding(
                        "inference",
                        "problem",
                        f"routing rule {rule.name!r} names model {model!r}, which {url} does "
                        f"not serve (it serves: {', '.join(sorted(served)) or 'none'}): add the "
                        "model to its repository or correct the rule",
                    )
        if not missing:
            yield Finding("inference", "ok", f"{url} serves every model rules {named} name")


async def _ask_services(urls: list[str], tls: ClientTls | None) -> dict[str, set[str] | Exception]:
    answers: dict[str, set[str] | Exception] = {}
    async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, verify=client_context(tls)) as client:
        for url in urls:
            try:
                answers[url] = await served_models(client, url)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
                answers[url] = error
    return answers


def _expected_schemas() -> dict[str, int]:
    """The schema version this fedgate writes, per component kept in PostgreSQL."""
    from gateway.index.schema import LATEST_VERSION
    from gateway.queue.dialect import POSTGRESQL
    from gateway.queue.migrations import available

    return {"index": LATEST_VERSION, "queue": available(POSTGRESQL)[-1].version}


def check_databases(databases: dict[str, str]) -> Iterator[Finding]:
    """Each PostgreSQL server of ``index.url`` / ``queue.url`` (setting -> URL): it answers,
    lets the user in, and holds no schema newer than this fedgate's (which it would refuse)."""
    import psycopg

    from gateway.migrations import VERSION_TABLE

    by_url: dict[str, list[str]] = {}
    for setting, url in databases.items():
        by_url.setdefault(url, []).append(setting)
    expected = _expected_schemas()
    for url, settings in by_url.items():
        names = ", ".join(settings)
        server = describe(url)
        try:
            with psycopg.connect(url, connect_timeout=int(TIMEOUT_SECONDS)) as connection:
                found = connection.execute(
                    "SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)
                ).fetchone()
                versions: dict[str, int] = {}
                if found and found[0]:
                    versions = {
                        str(component): int(version)
                        for component, version in connection.execute(
                            f"SELECT component, max(version) FROM {VERSION_TABLE} "
                            "GROUP BY component"
                        )
                    }
        except Exception as error:
            failure = classify(error)
            advice = (
                f"check {names}: its user, password and database"
                if failure.permanent
                else "start the server or check its host, port and firewall; the gateway "
                "waits for it at start (database_wait_seconds) and reports itself unready "
                "(/readyz) while it is away"
            )
            yield Finding(
                "postgresql", "problem", f"{names} ({server}): {failure.reason}; {advice}"
            )
            continue
        # index.url keeps the index's schema, queue.url the queue's.
        components = sorted(setting.split(".")[0] for setting in settings)
        newer = [
            f"{component} {versions[component]} (this fedgate: {expected[component]})"
            for component in components
            if versions.get(component, 0) > expected[component]
        ]
        if newer:
            yield Finding(
                "postgresql",
                "problem",
                f"{names} ({server}): schema written by a newer fedgate: {', '.join(newer)}; "
                "the gateway refuses it: upgrade fedgate",
            )
            continue
        schema = ", ".join(
            f"{component} {versions[component]}"
            if component in versions
            else f"no {component} tables yet"
            for component in components
        )
        yield Finding(
            "postgresql",
            "ok",
            f"{names} ({server}) answers; schema: {schema} (this fedgate's: "
            + ", ".join(f"{component} {expected[component]}" for component in components)
            + "; older ones are migrated, missing ones created, at the gateway's start)",
        )


def check_data_dir(data_dir: Path) -> Iterator[Finding]:
    """``data_dir`` can be written (a file created, fsynced, removed) and has room."""
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != data_dir:
        if not os.access(existing, os.W_OK):
            yield Finding(
                "data_dir",
                "problem",
                f"{data_dir} does not exist and {existing} is not writable: create it for the "
                "gateway's user",
            )
            return
        yield Finding("data_dir", "ok", f"{data_dir} does not exist yet: the gateway creates it")
    else:
        probe = data_dir / f".fedgate-doctor-{uuid.uuid4().hex}"
        try:
            with open(probe, "wb") as handle:
                handle.write(b"fedgate doctor")
                handle.flush()
                os.fsync(handle.fileno())
            probe.unlink()
        except OSError as error:
            yield Finding(
                "data_dir",
                "problem",
                f"cannot write in {data_dir} ({error.strerror}): give the gateway's user "
                "write access (and check the filesystem is not read-only)",
            )
            return
        yield Finding("data_dir", "ok", f"{data_dir} is writable")
    usage = shutil.disk_usage(existing)
    share = usage.free / max(1, usage.free + usage.used)
    room = f"{usage.free / 1024**3:.1f} GiB free ({share:.0%})"
    if usage.free < MIN_FREE_BYTES:
        yield Finding(
            "disk",
            "problem",
            f"{room}: under {MIN_FREE_BYTES // 1024**2} MiB the gateway reports itself "
            "unready (/readyz); free space or grow the volume",
        )
    elif share < MIN_FREE_SHARE:
        yield Finding(
            "disk",
            "warning",
            f"{room}: under 10 %; free space, grow the volume or set "
            "pipeline.retention_seconds when a PACS holds the images",
        )
    else:
        yield Finding("disk", "ok", room)


def check_dimse_port(host: str, port: int) -> Finding:
    """Whether the C-STORE SCP could listen where ``dimse`` says."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As a server sets it: a port left in TIME_WAIT by a stopped gateway is still free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return Finding(
                    "dimse",
                    "warning",
                    f"{host}:{port} is in use: fine if it is this gateway, running; otherwise "
                    "stop what holds it or change dimse.port",
                )
            if error.errno == errno.EACCES:
                return Finding(
                    "dimse",
                    "problem",
                    f"{host}:{port}: ports under 1024 need privileges (CAP_NET_BIND_SERVICE); "
                    "use 11112, DICOM's registered port, or grant the capability",
                )
            return Finding(
                "dimse",
                "problem",
                f"cannot listen on {host}:{port} ({error.strerror}): is dimse.host an address "
                "of this machine?",
            )
    return Finding("dimse", "ok", f"{host}:{port} is free for the C-STORE SCP")


def healthy(findings: list[Finding]) -> bool:
    """Healthy: no problem (warnings are advice)."""
    return all(finding.status != "problem" for finding in findings)
