"""botocore Stubber around a client with the production configuration: every request and response is
validated against the real service model (moto does not implement these runtime APIs usefully)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from botocore.stub import Stubber

from inference.api import aws_clients


@contextlib.contextmanager
def stubbed_client(service: str) -> Iterator[tuple[Any, Stubber]]:
    """(client, stubber) for `service`; fails the test if a queued response was never asked for."""
    client = aws_clients.new_client(service, region_name="us-east-1",
                                    aws_access_key_id="test", aws_secret_access_key="test")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()
