"""The ASGI wrapper every HTTP request passes: its metrics, and one access-log line per request."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.accesslog import AccessLog
    from serving.metrics import Metrics


class ObservedApp:
    """ASGI wrapper: the request metrics, and one access-log line per HTTP request when a log is given."""

    def __init__(self, app: Any, metrics: Metrics, access_log: AccessLog | None = None) -> None:
        self.app, self.metrics, self.access_log = app, metrics, access_log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("deepcloud.route") or getattr(scope.get("route"), "path", "unmatched")
            model = scope.get("deepcloud.model", "")
            self.metrics.observe(route, model, status[0], seconds)
            if self.access_log is not None:
                client = scope.get("client") or ("", 0)
                self.access_log.request(
                    scope["method"],
                    scope["path"],
                    status[0],
                    seconds,
                    model,
                    scope.get("deepcloud.request_id", ""),
                    client[0],
                )
