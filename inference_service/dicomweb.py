"""DICOMweb client side: fetch a series by WADO-RS, store results by STOW-RS (PS3.18 10.4, 10.5).

Built on ``dicomweb-client``. Failures are classified for the caller:

- the source or destination cannot be reached, times out or answers 5xx/429: transient;
- the source answers 404 (no such series): permanent, 404;
- the source or destination answers another 4xx (refused credentials, a request it rejects):
  permanent, 502 (retrying the same request cannot help, but the fault is upstream);
- a STOW-RS answer that lists the instance under FailedSOPSequence, or does not list it under
  ReferencedSOPSequence, is a failure even with a 2xx status (an archive once answered 200
  to a chunked STOW and stored nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import requests
from dicomweb_client.api import DICOMwebClient
from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset

from inference_service.errors import InferenceServiceError, PermanentError, TransientError
from serviceconfig import BasicAuth, BearerAuth, PeerAuth
from tlsconfig import ClientTls

T = TypeVar("T")

#: Any transfer syntax: the archive sends what it stores, and pydicom/pylibjpeg decode it here.
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Endpoint(_Strict):
    """A DICOMweb root (source or destination) and its credentials."""

    url: Annotated[str, Field(pattern=r"^https?://", max_length=2048)]
    auth: PeerAuth | None = None


def make_client(
    endpoint: Endpoint, timeout_seconds: float, tls: ClientTls | None = None
) -> DICOMwebClient:
    """A client of ``endpoint``; ``tls`` (``dicomweb.tls``) for an https:// one: the CA to
    verify it by and the client certificate to present."""
    session = _Session() if tls is not None else requests.Session()
    if tls is not None:
        session.verify = tls.requests_verify
        session.cert = tls.client_certificate
    headers: dict[str, str] = {}
    if isinstance(endpoint.auth, BasicAuth):
        session.auth = (endpoint.auth.username, endpoint.auth.password.get_secret_value())
    elif isinstance(endpoint.auth, BearerAuth):
        headers["Authorization"] = f"Bearer {endpoint.auth.token.get_secret_value()}"
    client = DICOMwebClient(
        url=endpoint.url.rstrip("/"),
        session=session,
        headers=headers,
        timeout=(5.0, timeout_seconds),
    )
    # dicomweb-client retries failed requests itself (5 attempts, ~30 s of back-off). The
    # caller's queue owns retrying: a transient error must reach it at once, classified.
    client.set_http_retry_params(retry=False)
    return client


class _Session(requests.Session):
    """A session whose ``verify`` (``dicomweb.tls.ca``) is not overridden by the environment.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` win over a session's ``verify``
    (psf/requests#3829; Debian images often set them): the configured CA would be silently
    replaced by the public bundle, and the gateway's certificate refused.
    """

    def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        settings: dict[str, Any] = super().merge_environment_settings(*args, **kwargs)
        if self.verify is not True:
            settings["verify"] = self.verify
        return settings


def classified(role: str, url: str, call: Callable[[], T]) -> T:
    """Run ``call``, turning requests' errors into permanent/transient service errors."""
    try:
        return call()
    except requests.exceptions.HTTPError as error:
        status = error.response.status_code if error.response is not None else 0
        if status == 404 and role == "source":
            raise PermanentError(f"source {url}: not found (404)", status_code=404) from None
        if status >= 500 or status == 429:
            raise TransientError(f"{role} {url} answered {status}", status_code=502) from None
        raise PermanentError(
            f"{role} {url} refused the request ({status})", status_code=502
        ) from None
    except requests.exceptions.SSLError as error:
        # A certificate the CA did not sign, or one we were asked for and lack: said as such,
        # since "unreachable" would send an operator looking at the network.
        raise TransientError(
            f"{role} {url}: TLS handshake failed ({_reason(error)})", status_code=502
        ) from None
    except requests.exceptions.Timeout:
        raise TransientError(f"{role} {url} timed out", status_code=504) from None
    except requests.exceptions.RequestException as error:
        raise TransientError(
            f"{role} {url} unreachable: {type(error).__name__}", status_code=502
        ) from None


def _reason(error: Exception) -> str:
    """The innermost cause's words (requests wraps urllib3's, which wraps ssl's)."""
    while error.__context__ is not None and error.__context__ is not error:
        error = error.__context__  # type: ignore[assignment]
    return str(error)[:200]


def fetch_series(
    endpoint: Endpoint,
    study_uid: str,
    series_uid: str,
    timeout_seconds: float,
    any_syntax: bool,
    tls: ClientTls | None = None,
) -> list[Dataset]:
    """All instances of the series (WADO-RS Retrieve Series), as stored when ``any_syntax``."""
    client = make_client(endpoint, timeout_seconds, tls)
    media_types = ANY_TRANSFER_SYNTAX if any_syntax else None
    with closing(client):
        return classified(
            "source",
            endpoint.url,
            lambda: list(client.retrieve_series(study_uid, series_uid, media_types=media_types)),
        )


def store_instances(
    endpoint: Endpoint,
    study_uid: str,
    datasets: Sequence[Dataset],
    timeout_seconds: float,
    tls: ClientTls | None = None,
) -> None:
    """STOW-RS ``datasets`` and check that the destination stored every one of them."""
    client = make_client(endpoint, timeout_seconds, tls)
    for ds in datasets:
        # Without a preamble dicomweb-client writes no "DICM" prefix, which some archives store
        # verbatim and then cannot serve (see DESIGN.md, interop traps).
        ds.preamble = b"\x00" * 128
    with closing(client):
        response = classified(
            "destination", endpoint.url, lambda: client.store_instances(datasets, study_uid)
        )
    wanted = {str(ds.SOPInstanceUID) for ds in datasets}
    failed = {
        str(item.get("ReferencedSOPInstanceUID")): item.get("FailureReason")
        for item in (response.get("FailedSOPSequence") or [])
    }
    stored = {
        str(item.get("ReferencedSOPInstanceUID"))
        for item in (response.get("ReferencedSOPSequence") or [])
    }
    if failed or not wanted <= stored:
        details = ", ".join(f"{uid} (reason {reason})" for uid, reason in failed.items())
        missing = sorted(wanted - stored - set(failed))
        raise PermanentError(
            f"destination {endpoint.url} did not store "
            + "; ".join(p for p in (details, ", ".join(missing)) if p),
            status_code=502,
        )


@contextmanager
def closing(client: DICOMwebClient) -> Iterator[None]:
    try:
        yield
    except InferenceServiceError:
        raise
    finally:
        client._session.close()
