"""The test suite's port helper: a server started with two ports must get two different ones
(an Orthanc given the same port for HTTP and DICOM failed a CI run with "already in use")."""

from __future__ import annotations

import socket

from tests.support.ports import free_port


def test_free_port_never_hands_out_a_port_twice_and_each_can_be_bound() -> None:
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
