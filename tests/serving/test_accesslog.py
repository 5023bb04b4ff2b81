"""The access log: one JSON object per request on stderr, which no request can break or forge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.accesslog import AccessLog

KEYS = {"ts", "method", "path", "status", "ms", "model", "request_id", "client"}


def test_every_field_a_client_can_choose_is_escaped(tmp_path: Path) -> None:
    forged = '"}{"forged":"1'
    with (tmp_path / "log").open("w") as fh:
        log = AccessLog(fh)
        log.request("GET", f"/x{forged}", 200, 0.001, "model:1", forged, forged)
        log.close()
    lines = (tmp_path / "log").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == KEYS
    assert (record["path"], record["request_id"], record["client"]) == (f"/x{forged}", forged, forged)


@pytest.mark.slow
def test_a_forwarded_for_header_cannot_forge_a_record(tiny_artifact: Path, start_server) -> None:
    """uvicorn takes the client address from X-Forwarded-For when the peer is 127.0.0.1 (a trusted proxy by
    default): the review's header made the line two records, the second one of its choosing."""
    server = start_server(tiny_artifact)
    server.wait_ready()
    forged = '"}{"forged":"1'
    for headers in ({"X-Forwarded-For": forged}, {"X-Request-Id": forged}, {}):
        server.request("GET", "/x%22%7D%7B%22forged%22:%221", headers=headers)  # unquoted in the log
    server.stop()
    records = [line for line in server.output().splitlines() if line.startswith('{"ts"') and '"/x' in line]
    assert len(records) == 3
    parsed = [json.loads(line) for line in records]
    assert all(set(record) == KEYS for record in parsed)
    assert [record["client"] for record in parsed] == [forged, "127.0.0.1", "127.0.0.1"]  # escaped, kept as is
    assert all(record["path"] == '/x"}{"forged":"1' for record in parsed)
    # and they were written at all: the last lines are flushed on SIGTERM too, not lost with the process
