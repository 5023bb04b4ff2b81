"""One boto3 session per command, made for the stack's region, and AWS errors as one line.

Every client comes from :meth:`Aws.client`, with ``endpoint_url`` taken from ``DEEPCLOUD_AWS_ENDPOINT_URL``
when it is set (the tests point it at moto_server on 127.0.0.1; unset, boto3 picks the real endpoints).
Credentials come from boto3's usual chain: ``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``~/.aws``, SSO, an instance or task role.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOTokenLoadError,
    TokenRetrievalError,
)

ENDPOINT_ENV = "DEEPCLOUD_AWS_ENDPOINT_URL"
"""Send every AWS call to this URL instead of AWS (moto_server in the tests)."""

CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "UnrecognizedClientException",
        "InvalidToken",
        "RequestExpired",
    }
)
CREDENTIALS_HINT = "run `aws configure` (or `aws sso login`), or set AWS_PROFILE"

_RETRIES = Config(retries={"max_attempts": 6, "mode": "standard"}, user_agent_extra="deepcloud-ops")


class Aws:
    """The session and its clients; tests may put a stubbed client in ``clients`` before use."""

    def __init__(self, region: str, endpoint_url: str | None = None, session: boto3.session.Session | None = None):
        self.region = region
        self.endpoint_url = endpoint_url if endpoint_url is not None else (os.environ.get(ENDPOINT_ENV) or None)
        self.session = session or boto3.session.Session(region_name=region)
        self.clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self.clients:
            self.clients[service] = self.session.client(
                service, region_name=self.region, endpoint_url=self.endpoint_url, config=_RETRIES
            )
        return self.clients[service]


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def describe(exc: BaseException) -> str:
    """A botocore/boto3 exception as the one line ops prints: what failed and what to do."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return f"no AWS credentials found: {CREDENTIALS_HINT}"
    if isinstance(exc, ProfileNotFound):
        return f"{exc}: fix AWS_PROFILE or add the profile to ~/.aws/config"
    if isinstance(exc, SSOTokenLoadError | TokenRetrievalError):
        return f"the AWS SSO session has expired: run `aws sso login` ({_first_line(exc)})"
    if isinstance(exc, NoRegionError):
        return "no AWS region: the stack output `region` is empty; run `pulumi up` again"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS: {_first_line(exc)}; check the network (and {ENDPOINT_ENV} if set)"
    if isinstance(exc, ClientError):
        code = error_code(exc)
        operation = getattr(exc, "operation_name", "") or "the call"
        message = _first_line(exc.response.get("Error", {}).get("Message", "")) or code  # some answers are HTML
        if code in CREDENTIAL_CODES:
            return f"AWS rejected the credentials ({code}: {message}): {CREDENTIALS_HINT}"
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return (
                f"AWS denied {operation}: {message}; the credentials in use need that permission "
                "(see README, 'The AWS workflow')"
            )
        return f"AWS {operation} failed: {code}: {message}"
    if isinstance(exc, BotoCoreError):
        return f"AWS call failed: {_first_line(exc)}"
    return _first_line(exc)


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    if isinstance(exc, str):
        return text.splitlines()[0] if text else ""
    return text.splitlines()[0] if text else type(exc).__name__
