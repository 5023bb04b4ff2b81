"""Every error the server answers, each with its HTTP status and the code its JSON body carries, and the
one place that turns them into responses.

Raised where they happen (decoders, the routes' checks, the batcher; TorchServe handlers' ``preprocess``
and SageMaker ``input_fn`` raise :class:`ClientError`, wrapped) and answered by :func:`response_for`,
or by a dialect of serving/inference.py that writes the same status, code and headers in its own body
shape. Anything else raised by model code is a 500 (:class:`InternalError`) carrying a request id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute


class HttpError(Exception):
    """An answer that is not a result: ``status``, ``code`` and extra ``headers``; the message is ``str()``."""

    status = 500
    code = "internal_error"
    default_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, message: str = "", headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers: Mapping[str, str] = {**self.default_headers, **(headers or {})}

    def detail(self, model: str | None) -> str:
        """The message the response carries; ``model`` is the model the request was for, when known."""
        return str(self)


class ClientError(HttpError, ValueError):
    """The client's mistake (4xx); the message says what was expected."""

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


class PayloadTooLarge(ClientError):
    """The body is over ``--max-body-bytes`` (declared, or grown past it while read)."""

    status = 413
    code = "payload_too_large"


class ModelNotFound(ClientError, LookupError):
    """No model (or version) of that name is loaded."""

    status = 404
    code = "model_not_found"


class RouteNotFound(ClientError):
    """No route has this path."""

    status = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    """A route has this path, but not this method; ``Allow`` lists the ones it takes."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message, {"Allow": ", ".join(allowed)})


class InvalidRequest(ClientError):
    """A management or multi-model call whose query or body is not what the call takes."""

    code = "invalid_request"


class InvalidRegistration(ClientError):
    """A model registration (or a multi-model load) that names no usable artifact."""

    code = "invalid_registration"


class InvalidModel(ClientError):
    """The artifact a multi-model load names is broken; the message says how."""

    code = "invalid_model"


class Unauthorized(ClientError):
    """The management API's bearer token is missing or wrong."""

    status = 401
    code = "unauthorized"
    default_headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class Conflict(ClientError):
    """That model (or version) is loaded, or loading, already."""

    status = 409
    code = "conflict"


class InsufficientStorage(HttpError):
    """A multi-model endpoint has no room for the model, even after unloading its idle ones."""

    status = 507
    code = "insufficient_storage"


class Unavailable(HttpError):
    """Try again shortly (503, with Retry-After)."""

    status = 503
    code = "overloaded"
    default_headers: ClassVar[Mapping[str, str]] = {"Retry-After": "1"}


class NotReady(Unavailable):
    """The models are still loading."""

    code = "not_ready"


class Overloaded(Unavailable):
    """A model's queue is full, or the server holds ``--max-pending-body-bytes`` of bodies already."""

    def detail(self, model: str | None) -> str:
        return f"model {model} is busy ({self}): retry shortly" if model else f"the server is busy ({self})"


class AnswerTimeout(HttpError, TimeoutError):
    """No answer within ``--timeout-s`` (queue plus forward pass)."""

    status = 504
    code = "timeout"


class InternalError(HttpError):
    """Model code or the server failed on this request; the log has the traceback."""


def error(
    status: int, code: str, message: str, request_id: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON error body every route but the Open Inference Protocol's writes: ``{"code", "message"}``."""
    body = {"code": code, "message": message}
    if request_id:
        body["request_id"] = request_id
        headers = {**(headers or {}), "X-Request-Id": request_id}
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def response_for(exc: HttpError, request_id: str | None = None, model: str | None = None) -> JSONResponse:
    return error(exc.status, exc.code, exc.detail(model), request_id, exc.headers)


def route_error(method: str, path: str, allowed: list[str]) -> HttpError:
    """A 405 when the path has a route (``allowed``: its methods), else a 404; in Starlette's words."""
    if allowed:
        return MethodNotAllowed(f"{method} {path}: Method Not Allowed", allowed)
    return RouteNotFound(f"{method} {path}: Not Found")


async def raised(request: Request, exc: Exception) -> Response:
    """Starlette's exception handler for an HttpError an endpoint raises (the management and multi-model apps)."""
    assert isinstance(exc, HttpError)
    return response_for(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (the management and multi-model apps) in our JSON error shape."""
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return response_for(MethodNotAllowed(f"{where}: Method Not Allowed", allowed.split(", ") if allowed else []))
    if exc.status_code == 404:
        return response_for(RouteNotFound(f"{where}: Not Found"))
    return error(exc.status_code, "http_error", f"{where}: {exc.detail}", None, exc.headers)


EXCEPTION_HANDLERS = {HTTPException: http_error, HttpError: raised}
"""What a Starlette app of this server passes as ``exception_handlers``: every error in our JSON shape."""


def json_api(routes: Sequence[BaseRoute]) -> Starlette:
    """A Starlette app of ``routes`` whose every error is in our JSON shape, and where a trailing slash is a
    JSON 404, not a bodiless redirect (the management and multi-model APIs)."""
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    app.router.redirect_slashes = False
    return app
