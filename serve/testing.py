"""Run the service in a background thread of this process: a real uvicorn server on 127.0.0.1.

For tests, the bench and notebooks: the app is served exactly as ``python -m serve`` serves it
(same app, same uvicorn), only without a subprocess, so the caller can start several services with
different settings and stop each cleanly.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import httpx
import uvicorn
from fastapi import FastAPI

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """``with BackgroundServer(app) as server: httpx.get(server.url + "/healthz")``."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = ""

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until /healthz says ready; RuntimeError with the service's answer otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            answer = httpx.get(self.url + "/healthz", timeout=10)
            if answer.status_code == 200:
                return
            if answer.json().get("status") == "failed" or time.monotonic() > deadline:
                raise RuntimeError(f"service not ready: {answer.text}")
            time.sleep(0.05)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self._thread.join(30)
