"""Certificates and server context for the TLS echo workloads (``transport_echo.tls_*``).

The server presents a certificate for ``localhost``; the client (``bench/echo_client.py
--tls-ca``) verifies it against the certificate authority that signed it and checks the
host name, as a real client does.  Where they come from, in this order:

1. CPython's own test certificates, the ones ``tests/test_tls.py`` uses
   (``keycert3.pem``: certificate and key for ``localhost``, signed by ``pycacert.pem``), in
   the worker's standard library (``test/certdata/``, or ``test/`` in older layouts);
2. else a self-signed certificate for ``localhost`` made at run time with ``openssl req``
   into the workload's temporary directory (it is its own CA).

Without either the workload is unavailable.  Only the handshakes, which happen before the
measured window, depend on the key; the records in the window use whatever cipher suite
the worker's OpenSSL negotiates by default (TLS 1.3 with OpenSSL 1.1.1 and later), the same
for every loop under test.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import ssl
import subprocess
from dataclasses import dataclass

from . import WorkloadUnavailable

#: The name the certificate is issued for; the client checks it (SNI and host name).
SERVER_NAME = "localhost"
#: Seconds ``openssl req`` may take (an RSA 2048 key is made in well under a second).
OPENSSL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Certificates:
    """PEM files of the server's certificate and key, and what the client verifies against."""

    certfile: str
    keyfile: str | None
    cafile: str
    #: Where they come from: ``"cpython-tests"`` or ``"openssl-req"``.
    source: str


def cpython_test_certificates() -> Certificates | None:
    """Return CPython's test certificates for ``localhost`` if the standard library ships them."""
    spec = importlib.util.find_spec("test")
    if spec is None or not spec.submodule_search_locations:
        return None
    for package in spec.submodule_search_locations:
        for directory in (os.path.join(package, "certdata"), package):
            certfile = os.path.join(directory, "keycert3.pem")
            cafile = os.path.join(directory, "pycacert.pem")
            if os.path.isfile(certfile) and os.path.isfile(cafile):
                return Certificates(certfile, None, cafile, "cpython-tests")
    return None


def self_signed_certificate(directory: str) -> Certificates | None:
    """Make a self-signed certificate for ``localhost`` in ``directory`` with ``openssl req``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    certfile = os.path.join(directory, "tls-cert.pem")
    keyfile = os.path.join(directory, "tls-key.pem")
    command = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={SERVER_NAME}",
        "-addext",
        f"subjectAltName=DNS:{SERVER_NAME}",
        "-keyout",
        keyfile,
        "-out",
        certfile,
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT_S, check=False
    )
    if completed.returncode != 0:
        return None
    return Certificates(certfile, keyfile, certfile, "openssl-req")


def certificates(directory: str) -> Certificates:
    """Return the certificates to use (see the module docstring); ``directory`` is scratch space."""
    found = cpython_test_certificates() or self_signed_certificate(directory)
    if found is None:
        raise WorkloadUnavailable(
            "no TLS certificate: CPython's test certificates are not installed and "
            "`openssl req` is not available"
        )
    return found


def server_context(found: Certificates) -> ssl.SSLContext:
    """Return the server's ``SSLContext``: the standard library's defaults, our certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(found.certfile, found.keyfile)
    return context
