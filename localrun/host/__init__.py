"""HTTP host of the local runner: serves a Functions app's HTTP triggers and the Durable HTTP API.

`python -m localrun --port 7071 --app function_app:app` (see docs/local.md).
"""

from .server import FUNCTION_KEY_ENV, MASTER_KEY_ENV, HostConfig, LocalHost, serve

__all__ = ["FUNCTION_KEY_ENV", "MASTER_KEY_ENV", "HostConfig", "LocalHost", "serve"]
