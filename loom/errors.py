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


def command_error(message: str, status: int = 2) -> int:
    """Print one line `<program>: error: <message>` on stderr and return `status` (2: the user's input).

    The program is what the user typed: `loom <command>` through the front door (operations/cli.py sets
    sys.argv[0] so), else the script's name (`train` in the training image)."""
    import os
    import sys

    program = sys.argv[0] if sys.argv and sys.argv[0].startswith("loom ") else os.path.basename(sys.argv[0] or "loom")
    print(f"{program}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return status
