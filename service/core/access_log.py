"""One writer of BentoML's access-log line, for the answers BentoML's own middleware never sees: the door's refusals (HTTP) and every gRPC call.

The line is ``<client> (<request fields>) (<response fields>) <ms>ms`` on the ``bentoml.access`` logger, as
BentoML's ``AccessLogMiddleware`` writes it, so that one parser reads every answer of a worker (testkit's
``ACCESS_LINE``: which worker answered which path with which status).
"""

from __future__ import annotations

import logging

access_log = logging.getLogger("bentoml.access")  # BentoML's access log: its format and handlers


def write(client: str, request: list[str], response: list[str], seconds: float) -> None:
    """One line: `request` and `response` are BentoML's ``key=value`` fields (scheme, method, path, ...; status, ...)."""
    access_log.info("%s (%s) (%s) %.3fms", client or "_", ",".join(request), ",".join(response), max(seconds, 0) * 1000)


def grpc_client(peer: str) -> str:
    """'127.0.0.1:5000' from grpc's 'ipv4:127.0.0.1:5000'."""
    return peer.split(":", 1)[1] if peer.startswith(("ipv4:", "ipv6:")) else peer or "_"
