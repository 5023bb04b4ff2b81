"""The inference port's one routing table, the one error mapping, and the runner interface."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from serving import errors
from serving.app import build_app
from serving.inference import OIP, RUNNER
from serving.routes import ROUTES, Router
from serving.runner import Reply, Runner
from serving.state import ServerState
from tests.serving.conftest import app_client


class Echo(Runner):
    """A model that answers every request with its body."""

    kind = "echo"

    def forward(self, payloads: list[Any]) -> Sequence[Any]:
        return [Reply(p.body, "text/plain") for p in payloads]


class Broken(Runner):
    kind = "broken"

    def forward(self, payloads: list[Any]) -> Sequence[Any]:
        return [RuntimeError("model code failed") for _ in payloads]


def test_a_half_implemented_runner_fails_at_construction() -> None:
    class Half(Runner):
        kind = "half"

    with pytest.raises(TypeError, match="abstract"):
        Half()  # type: ignore[abstract]  # what the test checks: the checker and the runtime both refuse it
    assert Echo().forward([]) == []


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.path)
def test_every_route_resolves_to_itself_for_its_methods_and_only_those(route) -> None:
    router = Router(ServerState(), ROUTES)
    path = route.path.replace("{model_name}", "digits").replace("{model_version}", "2")
    for method in route.methods:
        found, params, allowed = router.resolve(method, path)
        assert found is route
        assert allowed == []
        assert params == {n: {"model_name": "digits", "model_version": "2"}[n] for n in route.names}
    found, _, allowed = router.resolve("DELETE", path)
    assert found is route
    assert set(allowed) == set(route.methods)


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("POST", "/invocations", 503, None),  # routed to the model, which is not loaded yet
        ("PUT", "/predictions/digits", 503, None),
        ("POST", "/v2/models/digits/versions/1/infer", 503, None),
        ("GET", "/invocations", 405, {"POST"}),
        ("OPTIONS", "/invocations", 405, {"POST"}),
        ("GET", "/predictions/digits/1", 405, {"POST", "PUT"}),
        ("GET", "/v2/models/digits/infer", 405, {"POST"}),
        ("POST", "/ping", 405, {"GET", "HEAD"}),
        ("GET", "/predictions", 404, None),
        ("POST", "/predictions/", 404, None),
        ("POST", "/predictions/a/b/c", 404, None),
        ("POST", "/invocations/", 404, None),
        ("GET", "/v2/models/digits/versions//ready", 404, None),
        ("GET", "/", 404, None),
        ("GET", "/models", 404, None),  # the management API is on its own port only
    ],
)
def test_the_routing_table_answers_each_path_and_method(method: str, path: str, status: int, allow) -> None:
    state = ServerState()
    with TestClient(build_app(state)) as client:
        response = client.request(method, path)
    assert response.status_code == status, response.text
    body = response.json()
    if path.startswith("/v2/") and status == 503:  # the Open Inference Protocol's own error shape
        assert "still loading" in body["error"]
    else:
        assert body["code"] == {503: "not_ready", 404: "not_found", 405: "method_not_allowed"}[status]
    if allow is not None:
        assert set(response.headers["allow"].split(", ")) == allow
        assert body["message"] == f"{method} {path}: Method Not Allowed"
    metrics = state.metrics.render().decode()
    label = (
        "unmatched"
        if status == 404
        else next(r.path for r in ROUTES if Router(state, ROUTES).resolve(method, path)[0] is r)
    )
    assert f'route="{label}"' in metrics


def test_head_is_taken_wherever_get_is() -> None:
    with TestClient(build_app(ServerState())) as client:
        assert client.head("/ping").status_code == 503
        assert client.head("/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    ("exc", "status", "code", "headers"),
    [
        (errors.InvalidInput("x"), 400, "invalid_input", {}),
        (errors.UnsupportedMediaType("x"), 415, "unsupported_media_type", {}),
        (errors.NotAcceptable("x"), 406, "not_acceptable", {}),
        (errors.PayloadTooLarge("x"), 413, "payload_too_large", {}),
        (errors.ModelNotFound("x"), 404, "model_not_found", {}),
        (errors.RouteNotFound("x"), 404, "not_found", {}),
        (errors.MethodNotAllowed("x", ["POST", "PUT"]), 405, "method_not_allowed", {"allow": "POST, PUT"}),
        (errors.NotReady("x"), 503, "not_ready", {"retry-after": "1"}),
        (errors.Overloaded("x"), 503, "overloaded", {"retry-after": "1"}),
        (errors.AnswerTimeout("x"), 504, "timeout", {}),
        (RuntimeError("secret detail"), 500, "internal_error", {}),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_one_place_maps_every_error_to_its_response(exc, status, code, headers, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="serving"):
        response = RUNNER.failure(exc, "req-1", "digits:1")
        oip = OIP.failure(exc, "req-1", "digits:1")
    body = orjson.loads(response.body)
    assert (response.status_code, body["code"], body["request_id"]) == (status, code, "req-1")
    assert oip.status_code == status
    assert set(orjson.loads(oip.body)) == {"error"}
    for reply in (response, oip):
        assert reply.headers["x-request-id"] == "req-1"
        for name, value in headers.items():
            assert reply.headers[name] == value
    if status == 500:  # the cause goes to the log, never to the client
        assert "secret detail" not in body["message"]
        assert "req-1" in body["message"]
        assert "secret detail" in caplog.text
    if isinstance(exc, errors.Overloaded):
        assert body["message"] == "model digits:1 is busy (x): retry shortly"


def test_the_503_and_504_keep_the_exception_types_their_callers_catch() -> None:
    assert issubclass(errors.AnswerTimeout, TimeoutError)
    assert issubclass(errors.ModelNotFound, LookupError)
    assert issubclass(errors.InvalidInput, ValueError)
    assert not issubclass(errors.Overloaded, errors.ClientError)


def test_a_model_that_fails_is_a_500_and_a_handler_model_is_routed() -> None:
    with app_client([("echo", "1", Echo()), ("broken", "1", Broken())]) as (client, _):
        ok = client.post("/predictions/echo", content=b"hello", headers={"content-type": "text/plain"})
        assert (ok.status_code, ok.content) == (200, b"hello")
        assert ok.headers["x-request-id"]
        failed = client.put("/predictions/broken/1", content=b"x")
        assert failed.status_code == 500
        assert failed.json()["code"] == "internal_error"
        missing = client.post("/predictions/echo/9", content=b"x")
        assert missing.status_code == 404
        assert missing.json()["code"] == "model_not_found"
        oip = client.post("/v2/models/echo/infer", content=b"{}")
        assert oip.status_code == 400
        assert "served on /predictions and /invocations only" in oip.json()["error"]
