from __future__ import annotations

import socket
import ssl
import time

import httpx

# Ports handed out in this process. The OS may offer a port again as soon as the probing
# socket closes, so two calls before either server binds (an Orthanc's HTTP and DICOM ports)
# could get the same one; the server then fails with "port already in use".
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port that is free now (the OS picks it) and that no earlier call in this
    process returned."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def non_loopback_address() -> str:
    """An IPv4 address of this machine that is not loopback, to reach a server from outside
    loopback; the test needing one fails (or skips outside CI) where the machine has none."""
    import subprocess

    from tests.support.requirements import missing

    output = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout
    for address in output.split():
        if "." in address and not address.startswith("127."):
            return address
    missing("this machine has no non-loopback IPv4 address")
    raise AssertionError("unreachable")


def wait_for_http(
    url: str,
    timeout: float = 30.0,
    process: object | None = None,
    ready: tuple[int, ...] = (),
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Poll ``url`` until it answers 2xx (or a status in ``ready``), or raise; ``verify``:
    httpx's, for an https:// server (tests/support/tls.py makes the context)."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if process is not None and getattr(process, "poll")() is not None:  # noqa: B009
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            response = httpx.get(url, timeout=2.0, verify=verify)
            if response.is_success or response.status_code in ready:
                return
            last_error = f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            last_error = repr(error)
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s: {last_error}")
