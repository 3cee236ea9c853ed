"""Errors a request can end with, each knowing its HTTP status and the field to blame.

The worker and the request parser raise these; the app turns them into one JSON shape
(``{"error": ..., "field": ..., "kind": ...}``) so a client can point at the wrong input.
"""

from __future__ import annotations

__all__ = ["Cancelled", "DeadlineExceeded", "DeviceOutOfMemory", "RequestError", "ServeError"]


class ServeError(Exception):
    """A request that cannot be answered with an image; ``kind`` is the errors metric's label."""

    status = 500
    kind = "internal"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, object]:
        return {"error": self.message, "field": self.field, "kind": self.kind}


class RequestError(ServeError):
    """Bad input: ``status`` 400 (undecodable), 413 (too large) or 422 (out of range, unknown name)."""

    kind = "bad_request"

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}", field)
        self.status = status


class DeviceOutOfMemory(ServeError):
    """Out of device memory even at batch 1 with VAE tiling: 503, the client may retry later."""

    status = 503
    kind = "out_of_memory"


class Cancelled(ServeError):
    """The client went away (or the service is stopping); nobody reads the answer."""

    status = 499
    kind = "client_disconnected"


class DeadlineExceeded(Cancelled):
    """The request's deadline (its ``timeout`` or the service's) passed: 504."""

    status = 504
    kind = "deadline"

    def __init__(self, message: str) -> None:
        super().__init__(message, "timeout")
