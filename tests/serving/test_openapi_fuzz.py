"""Schemathesis against the OpenAPI document the server itself serves, over real HTTP to a real process.

Every operation in ``GET /openapi.json`` gets schemathesis' three phases: examples (the model names and
versions the document lists as ``examples``), coverage (boundary and invalid values, missing bodies, wrong
content types, the methods a route does not take) and fuzzing (300 generated cases, positive and negative,
i.e. bodies that break the schema). Generation is seeded and derandomized, so a CI failure replays locally.

Every response must be a non-5xx whose status code, content type, headers and body match the document, and
data that breaks the schema must be refused with a 4xx. Two hooks keep the cases close to the server: half of
the generated path parameters are the loaded model names and versions (else nearly every case is a 404), and
about half of the positive JSON and .npy cases become real digits-shaped inputs for a loaded model, some asking for
an .npy answer (else no case is ever a 200, and the Predictions schema and the .npy response go unchecked).
The fixture's teardown asserts that every kind of case was sent and answered as expected.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.serving.conftest import write_tiny_artifact

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 300
SEED = 20260101
VERSIONS = ("1", "2")
JSON, NPY = "application/json", "application/x-npy"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
    allow_header_conformance,
]
CONFIG = {
    "seed": SEED,
    "request-timeout": 30,
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},
    },
}
INFERENCE = (
    "POST /invocations",
    "POST /predictions/{model_name}",
    "POST /predictions/{model_name}/{model_version}",
    "PUT /predictions/{model_name}",
    "PUT /predictions/{model_name}/{model_version}",
)

OIP_INFERENCE = ("POST /v2/models/{model_name}/infer", "POST /v2/models/{model_name}/versions/{model_version}/infer")

# .npy bodies are opaque bytes (format: binary) to schemathesis: send them as it sends application/octet-stream.
schemathesis.serializer.alias(NPY, "application/octet-stream")

_pixels = st.integers(0, 255)
_image = st.lists(st.lists(_pixels, min_size=8, max_size=8), min_size=8, max_size=8)
_instances = st.lists(st.one_of(_image, _image.map(lambda image: [image])), min_size=1, max_size=4)
VALID_JSON = st.one_of(_image, _instances, _instances.map(lambda batch: {"instances": batch}))
VALID_OIP = st.tuples(st.integers(1, 4), st.sampled_from(["UINT8", "FP32", "INT64"]), st.randoms()).map(
    lambda spec: {
        "inputs": [
            {
                "name": "input",
                "shape": [spec[0], 1, 8, 8],
                "datatype": spec[1],
                "data": spec[2].choices(range(256), k=spec[0] * 64),
            }
        ]
    }
)
VALID_NPY = st.tuples(st.integers(1, 4), st.sampled_from(["uint8", "float32", "float64", "int64"]), st.randoms()).map(
    lambda spec: _npy(spec[2].choices(range(256), k=spec[0] * 64), spec[0], spec[1])
)


def _npy(pixels: list[int], n: int, dtype: str) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(pixels, dtype=dtype).reshape(n, 1, 8, 8), allow_pickle=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("fuzz") / "store"
    for seed, version in enumerate(VERSIONS):
        write_tiny_artifact(store / "digits" / version, seed=seed)
    return store


@pytest.fixture
def served_schema(model_store: Path, start_server, request: pytest.FixtureRequest):
    if not hasattr(request.node, "_nodeid"):
        # schemathesis 4.32.5's from_fixture reads and renames Item._nodeid, which pytest 9 no longer has (the
        # node id lives in Item._id); give it the attribute so it runs. Only its per-operation test names are lost.
        request.node._nodeid = request.node.nodeid
    server = start_server(model_store, args=("--model-store", str(model_store), "--no-access-log"))
    server.wait_ready()
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=schemathesis.Config.from_dict(CONFIG))
    paths = schema.raw_schema["paths"]
    known = {  # what the served document says is loaded
        "model_name": paths["/predictions/{model_name}"]["post"]["parameters"][0]["schema"]["examples"],
        "model_version": paths["/predictions/{model_name}/{model_version}"]["post"]["parameters"][1]["schema"][
            "examples"
        ],
    }
    assert known == {"model_name": ["digits"], "model_version": list(VERSIONS)}, known

    @schema.hook
    def before_generate_path_parameters(context, strategy):
        def half_known(generated):
            if not isinstance(generated, dict) or not generated:
                return st.just(generated)
            real = {k: st.sampled_from(known[k]) if k in known else st.just(v) for k, v in generated.items()}
            return st.one_of(st.just(generated), st.fixed_dictionaries(real))

        return strategy.flatmap(half_known)

    @schema.hook
    def flatmap_case(context, case):
        meta = case.meta
        valid = (
            VALID_OIP
            if case.operation.path.endswith("/infer")
            else {JSON: VALID_JSON, NPY: VALID_NPY}.get(case.media_type)
        )
        fuzzed_positive = meta is not None and (meta.phase.name.value, meta.generation.mode.value) == (
            "fuzzing",
            "positive",
        )
        if valid is None or not fuzzed_positive:
            return st.just(case)

        def valid_case(drawn):  # a case of its own, not an edit: schemathesis would relabel binary bodies negative
            body, path_parameters, accept = drawn
            headers = {**(case.headers or {}), **({"Accept": accept} if accept else {})}
            return case.operation.Case(
                path_parameters=path_parameters,
                headers=headers,
                query=case.query,
                body=body,
                media_type=case.media_type,
            )

        loaded = st.fixed_dictionaries({k: st.sampled_from(known[k]) for k in case.path_parameters or {}})
        # The document has no Accept parameter; asking for .npy checks the other documented 200 content type.
        real = st.tuples(valid, loaded, st.sampled_from([None, JSON, NPY])).map(valid_case)
        return st.one_of(real, st.just(case))

    STATUSES.clear()
    BODIES.clear()
    RESPONSES.clear()
    yield schema
    summary = ", ".join(f"{operation} {status}: {count}" for (operation, status), count in sorted(STATUSES.items()))
    assert server.proc.poll() is None, f"the server died:\n{server.output()[-3000:]}"
    assert server.request("GET", "/ping")[0] == 200, "the server must still be healthy after the fuzzing"
    assert "Traceback" not in server.output(), server.output()[-3000:]
    for operation in INFERENCE:
        sent = sum(count for (op, _), count in STATUSES.items() if op == operation)
        assert sent >= MAX_EXAMPLES, f"{operation}: only {sent} cases were sent ({summary})"
        assert STATUSES[(operation, 200)] >= 10, f"{operation}: too few valid inputs got through ({summary})"
        assert STATUSES[(operation, 400)] >= 30, f"{operation}: too few invalid inputs were sent ({summary})"
    for operation in INFERENCE[1:]:
        assert STATUSES[(operation, 404)] >= 30, f"{operation}: too few unknown models or versions ({summary})"
    for operation in (
        "GET /ping",
        "GET /metrics",
        "GET /v2",
        "GET /v2/health/ready",
        "GET /v2/models/{model_name}",
        "GET /v2/models/{model_name}/versions/{model_version}/ready",
    ):
        assert STATUSES[(operation, 200)] >= 1, summary
    for operation in OIP_INFERENCE:  # the Open Inference Protocol's: real inputs get through, broken ones are 400s
        assert STATUSES[(operation, 200)] >= 10, f"{operation}: too few valid inputs got through ({summary})"
        assert STATUSES[(operation, 400)] >= 30, f"{operation}: too few invalid inputs were sent ({summary})"
        assert STATUSES[(operation, 404)] >= 10, f"{operation}: too few unknown models or versions ({summary})"
    bodies = ", ".join(f"{media} {status}: {count}" for (media, status), count in sorted(BODIES.items(), key=str))
    for media, status in ((JSON, 200), (NPY, 200), (JSON, 400), (NPY, 400), ("image/png", 400), ("image/jpeg", 400)):
        assert BODIES[(media, status)] >= 1, f"no {media} body got a {status} ({bodies})"
    assert RESPONSES[JSON] >= 1, RESPONSES
    assert RESPONSES[NPY] >= 1, RESPONSES


STATUSES: Counter[tuple[str, int]] = Counter()
"""(method and path, status) of every response, for the assertions that every kind of case was sent."""
BODIES: Counter[tuple[str | None, int]] = Counter()
"""(media type, status) of every response."""
RESPONSES: Counter[str] = Counter()
"""Content type of every 200."""
schema = schemathesis.pytest.from_fixture("served_schema")


@schema.parametrize()
def test_every_operation_conforms_to_the_served_document(case) -> None:
    response = case.call_and_validate(checks=CHECKS)
    STATUSES[(f"{case.method} {case.operation.path}", response.status_code)] += 1
    BODIES[(case.media_type, response.status_code)] += 1
    if response.status_code == 200:
        RESPONSES[response.headers.get("content-type", [""])[0]] += 1
