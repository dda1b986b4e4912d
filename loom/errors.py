"""One convention for errors that become HTTP answers, shared by the server, the Lambda and its clients."""

from __future__ import annotations


class StatusError(Exception):
    """An error with the HTTP status it becomes: `StatusError(status, message)` -> `{"error": message}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)
        self.message = message

    def body(self) -> dict[str, str]:
        """The JSON error body every Loom HTTP answer uses."""
        return {"error": self.message}
