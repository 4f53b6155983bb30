"""One TLS context per process, for every HTTP client metastore makes.

An ``httpx`` client builds its own ``ssl.SSLContext`` unless it is given
one, loading the certificate authorities each time: ~18 ms a client on
this machine, paid by every source a worker opens, every pull's search,
every webhook relay. The context is read-only once made and safe to share
between clients and threads, so one is made, on first use, and shared.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_context() -> ssl.SSLContext:
    """The context of httpx's default verification (``verify=True``, the environment's
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` as httpx reads them), made once per process."""
    return httpx.create_ssl_context()
