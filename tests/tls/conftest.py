"""A test CA for the TLS tests (tests/support/tls.py): one per module, certificates on demand."""

from __future__ import annotations

import pytest

from tests.support.tls import CertificateAuthority


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """A CA nobody trusts: its certificates stand for an impostor's."""
    return CertificateAuthority(tmp_path_factory.mktemp("other-ca"), name="another CA")
