"""A short client for the Loom API: a photo in, the JSON answer out (docs/api.md, "Clients").

    python scripts/api_client.py https://abc123.execute-api.us-east-1.amazonaws.com photo.jpg \
        [--route describe|attributes] [--language pt] [--product-type shirt] [--auth iam|jwt|none]

--auth iam (the API's default, Terraform authorization = AWS_IAM): the request is signed with AWS Signature
Version 4 for execute-api by botocore, with the credentials and Region of the usual AWS chain (AWS_PROFILE,
environment, instance role; --region overrides). --auth jwt (authorization = JWT): the token in --token or
LOOM_API_TOKEN is sent as `Authorization: Bearer ...`. Needs only botocore (for iam) and the standard library.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def request_body(photo: Path, **fields: Any) -> bytes:
    """The JSON body: the photo's bytes in base64 and the optional fields that are set."""
    body = {"image": base64.b64encode(photo.read_bytes()).decode("ascii")}
    body.update({k: v for k, v in fields.items() if v is not None})
    return json.dumps(body).encode()


def signed_headers(url: str, body: bytes, region: str, credentials: Any) -> dict[str, str]:
    """SigV4 headers (Authorization, X-Amz-Date, X-Amz-Security-Token) for a POST to API Gateway."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(credentials, "execute-api", region).add_auth(request)
    return dict(request.headers.items())


def call(url: str, body: bytes, auth: str = "iam", region: str | None = None, token: str | None = None,
         timeout: float = 35.0) -> tuple[int, dict[str, Any]]:
    """(status, JSON answer) of one POST; the API's error bodies are JSON too."""
    headers = {"Content-Type": "application/json"}
    if auth == "iam":
        import botocore.session

        session = botocore.session.get_session()
        credentials = session.get_credentials()
        region = region or session.get_config_variable("region")
        if credentials is None or not region:
            raise SystemExit("api_client: error: --auth iam needs AWS credentials and a Region (--region)")
        headers = signed_headers(url, body, region, credentials.get_frozen_credentials())
    elif auth == "jwt":
        if not token:
            raise SystemExit("api_client: error: --auth jwt needs --token or LOOM_API_TOKEN")
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"error": raw.decode("utf-8", "replace")[:300]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("api", help="the API's base URL (Terraform output api_url)")
    parser.add_argument("photo", type=Path, help="a JPEG or PNG file (at most 4 MiB)")
    parser.add_argument("--route", default="describe", choices=["describe", "attributes"])
    parser.add_argument("--language")
    parser.add_argument("--product-type")
    parser.add_argument("--auth", default="iam", choices=["iam", "jwt", "none"])
    parser.add_argument("--token", default=os.environ.get("LOOM_API_TOKEN"))
    parser.add_argument("--region")
    args = parser.parse_args(argv)
    if not args.photo.is_file():
        parser.error(f"{args.photo} is not a file")
    fields = {"product_type": args.product_type}
    if args.route == "describe":
        fields["language"] = args.language
    url = f"{args.api.rstrip('/')}/{args.route}"
    status, answer = call(url, request_body(args.photo, **fields), args.auth, args.region, args.token)
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
