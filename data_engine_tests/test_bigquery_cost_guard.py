"""The BigQuery cost guard, through the official client over HTTP.

The emulator reports 0 bytes for every dry run, so the over-budget path is driven by a minimal
wire-level BigQuery stand-in that answers `jobs.insert` with a large dry-run estimate and records
every job it is sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from data_engine.warehouse import QueryOverBudget
from data_engine.warehouse.bigquery_engine import BigQueryWarehouse, make_client
from data_engine.warehouse.sql import Query, sqlglot

ESTIMATE = 5_000_000_000_000


class _Jobs(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(body)
        reply = {
            "kind": "bigquery#job",
            "jobReference": {"projectId": "p", "jobId": "dry", "location": "US"},
            "configuration": body["configuration"],
            "status": {"state": "DONE"},
            "statistics": {"totalBytesProcessed": str(ESTIMATE), "query": {"totalBytesProcessed": str(ESTIMATE)}},
        }
        payload = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def bigquery_stand_in(monkeypatch):
    _Jobs.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jobs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
    yield _Jobs.received
    server.shutdown()


def test_query_over_budget_fails_before_it_runs_naming_the_estimate(bigquery_stand_in):
    tables = {"predictions": "p.d.predictions", "frames": "p.d.frames", "review_selections": "p.d.sel"}
    warehouse = BigQueryWarehouse(make_client("p"), tables, max_bytes_billed=1_000_000)
    query = Query("count", sqlglot.parse_one("SELECT COUNT(*) AS n FROM predictions WHERE model = @m", read="bigquery"),
                  {"m": "ENS"})
    with pytest.raises(QueryOverBudget, match="would scan 5,000,000,000,000 bytes, over max_bytes_billed 1,000,000"):
        warehouse.run(query, labels={"model": "ENS", "partition": "2026-11-24|ENS", "dagster_run_id": "R1"})
    [dry_run] = bigquery_stand_in  # only the dry run was sent; the query itself never ran
    config = dry_run["configuration"]
    assert config["dryRun"] is True
    assert config["labels"] == {"model": "ens", "partition": "2026-11-24_ens", "dagster_run_id": "r1"}
    assert "`p`.`d`.`predictions`" in config["query"]["query"]
