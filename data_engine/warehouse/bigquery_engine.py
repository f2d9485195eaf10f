"""The BigQuery warehouse of the prod profile (and of the emulator in tests).

Every query is dry-run first: its byte estimate is recorded and compared with `max_bytes_billed`, so a
query over budget fails before it runs, naming the estimate. The real run carries the same cap and
job labels for cost attribution. google-cloud-bigquery is imported here only, never at definitions load.
"""

from __future__ import annotations

import os
import re

import pyarrow as pa
from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery

from data_engine.warehouse.base import QueryOverBudget, QueryResult, Warehouse, WarehouseError
from data_engine.warehouse.sql import Query, bigquery_type


def make_client(project: str | None = None, location: str | None = None) -> bigquery.Client:
    """A client from application default credentials, or anonymous against BIGQUERY_EMULATOR_HOST."""
    if os.environ.get("BIGQUERY_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(project=project or "emulator", location=location, credentials=AnonymousCredentials())
    return bigquery.Client(project=project, location=location)


def label_value(value: str) -> str:
    """BigQuery label values: at most 63 lowercase letters, digits, '_' or '-'."""
    return re.sub(r"[^a-z0-9_-]", "_", value.lower())[:63]


def query_parameter(name: str, value: object):
    if isinstance(value, (list, tuple)):
        item_type = bigquery_type(value[0]) if value else "STRING"
        return bigquery.ArrayQueryParameter(name, item_type, list(value))
    return bigquery.ScalarQueryParameter(name, bigquery_type(value), value)


class BigQueryWarehouse(Warehouse):
    def __init__(self, client: bigquery.Client, tables: dict[str, str], max_bytes_billed: int):
        super().__init__(tables)
        self.client = client
        self.max_bytes_billed = max_bytes_billed

    def run(self, query: Query, labels: dict[str, str] | None = None) -> QueryResult:
        text = query.render("bigquery", self.tables)
        params = [query_parameter(name, value) for name, value in query.params.items()]
        job_labels = {label_value(k): label_value(v) for k, v in (labels or {}).items()}
        try:
            dry_run = self.client.query(
                text,
                job_config=bigquery.QueryJobConfig(
                    dry_run=True, use_query_cache=False, query_parameters=params, labels=job_labels
                ),
            )
            estimate = int(dry_run.total_bytes_processed or 0)
            if estimate > self.max_bytes_billed:
                raise QueryOverBudget(
                    f"query {query.name} would scan {estimate:,} bytes, over max_bytes_billed {self.max_bytes_billed:,}"
                    " (warehouse.max_bytes_billed in the fleet config); it was not run"
                )
            job = self.client.query(
                text,
                job_config=bigquery.QueryJobConfig(
                    query_parameters=params, labels=job_labels, maximum_bytes_billed=self.max_bytes_billed
                ),
            )
            table = job.result().to_arrow(create_bqstorage_client=False)
        except google_exceptions.GoogleAPICallError as error:
            raise WarehouseError(f"query {query.name} failed on BigQuery: {error}") from error
        return QueryResult(table=table, bytes_estimated=estimate, bytes_billed=job.total_bytes_billed)

    def append(self, logical_table: str, rows: pa.Table) -> None:
        target = self.tables[logical_table]
        records = [
            {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in row.items()}
            for row in rows.to_pylist()
        ]
        for start in range(0, len(records), 10_000):
            errors = self.client.insert_rows_json(target, records[start : start + 10_000])
            if errors:
                raise WarehouseError(f"appending to {target} failed: {errors[:3]}")
