"""TorchServe's handler-side objects, as its handlers use them: the ``context`` that ``initialize`` and
``handle`` receive (``ts.context.Context``), its per-request header holder and its metrics.

serving/torchserve.py builds one Context per model and fills its request processors per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("serving")

SERVER_NAME = "deepcloud"
SERVER_VERSION = "0.12.0"
"""The TorchServe version whose handler API this module follows (context.system_properties)."""


class RequestProcessor:
    """TorchServe's per-request header holder (``ts.context.RequestProcessor``)."""

    def __init__(self, request_header: Mapping[str, Any]) -> None:
        self._status_code = 200
        self._reason_phrase: str | None = None
        self._response_header: dict[str, str] = {}
        self._request_header = dict(request_header)
        # HTTP header names are case-insensitive and reach us lower-cased; handlers ask for "X-Foo".
        self._by_lower = {k.lower(): v for k, v in self._request_header.items()}

    def get_request_property(self, key: str) -> Any:
        value = self._request_header.get(key)
        return self._by_lower.get(key.lower()) if value is None else value

    def get_request_properties(self) -> dict[str, Any]:
        return self._request_header

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        self._status_code, self._reason_phrase = code, reason_phrase

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        self._response_header[key] = value

    def get_response_headers(self) -> dict[str, str]:
        return self._response_header

    def get_response_header(self, key: str) -> str | None:
        return self._response_header.get(key)


class HandlerMetrics:
    """The ``context.metrics`` handlers call (``add_time`` and friends); recorded at debug level."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.request_ids: Any = None

    def _record(self, kind: str, name: str, value: Any, unit: str | None = None) -> None:
        log.debug("handler metric model=%s %s %s=%s%s", self.model, kind, name, value, unit or "")

    def add_time(self, name, value, idx=None, unit="ms", dimensions=None, metric_type=None):
        self._record("time", name, value, unit)

    def add_counter(self, name, value, idx=None, dimensions=None):
        self._record("counter", name, value)

    def add_size(self, name, value, idx=None, unit="MB", dimensions=None, metric_type=None):
        self._record("size", name, value, unit)

    def add_percent(self, name, value, idx=None, dimensions=None, metric_type=None):
        self._record("percent", name, value, "%")

    def add_error(self, name, value, dimensions=None):
        self._record("error", name, value)

    def add_metric(self, name, value, unit=None, idx=None, dimensions=None, metric_type=None):
        self._record("metric", name, value, unit)


class Context:
    """TorchServe's handler context (``ts.context.Context``): what ``initialize`` and ``handle`` receive."""

    def __init__(
        self,
        model_name: str,
        model_dir: Path,
        manifest: dict[str, Any],
        batch_size: int,
        gpu: int | None,
        model_yaml_config: dict | None = None,
    ) -> None:
        self.model_name = model_name
        self.manifest = manifest
        self._system_properties = {
            "model_dir": str(model_dir),
            "gpu_id": gpu,
            "batch_size": batch_size,
            "server_name": SERVER_NAME,
            "server_version": SERVER_VERSION,
            "limit_max_image_pixels": True,
        }
        self.request_ids: dict[int, str] | None = None
        self.request_processor: list[RequestProcessor] = []
        self.metrics = HandlerMetrics(model_name)
        self.model_yaml_config = model_yaml_config or {}
        self.stopping_criteria = None

    @property
    def system_properties(self) -> dict[str, Any]:
        return self._system_properties

    def get_request_id(self, idx: int = 0) -> str | None:
        return (self.request_ids or {}).get(idx)

    def get_request_header(self, idx: int, key: str) -> Any:
        return self.request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, Any]:
        return self.request_processor[idx].get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("content-type")

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        processor = self.request_processor[idx]
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        if self.request_processor and idx < len(self.request_processor):
            self.request_processor[idx].report_status(code, phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for processor in self.request_processor:
            processor.report_status(code, phrase)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_response_headers()

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.request_processor[idx].add_response_property(key, value)

    def get_sequence_id(self, idx: int) -> str:
        return self.get_request_header(idx, "ts_request_sequence_id")
