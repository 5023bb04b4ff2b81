"""Errors that are the client's fault, each with its HTTP status and the code the JSON error carries.

Raised by decoders, by TorchServe handlers' ``preprocess`` and by SageMaker ``input_fn`` (wrapped), and
mapped to a 4xx by the routes; anything else raised by model code is a 500.
"""

from __future__ import annotations


class ClientError(ValueError):
    status = 400
    code = "invalid_input"


class InvalidInput(ClientError):
    """The request body is not what the model takes; the message says what was expected."""


class UnsupportedMediaType(ClientError):
    """The request's Content-Type is not one the model reads."""

    status = 415
    code = "unsupported_media_type"


class NotAcceptable(ClientError):
    """The request's Accept names no type the server writes."""

    status = 406
    code = "not_acceptable"
