"""One TLS client context for the whole process.

Building a context loads the CA bundle, about 35 ms on the development machine. httpx would pay that once
per client, but websockets pays it on every `wss://` connect, which would add it to every caller's
silence before the greeting. The context is read-only after creation, so sharing it is safe.
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def client_context() -> ssl.SSLContext:
    import certifi  # httpx's own CA bundle, so REST and WebSocket trust the same roots

    return ssl.create_default_context(cafile=certifi.where())
