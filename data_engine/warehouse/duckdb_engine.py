"""The DuckDB warehouse of the local profile and the tests: the `sql/` files transpiled by sqlglot."""

from __future__ import annotations

import random
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from data_engine.warehouse import sql
from data_engine.warehouse.base import QueryResult, Warehouse, WarehouseError
from data_engine.warehouse.sql import Query

LOCAL_TABLES = {name: name for name in sql.LOGICAL_TABLES}


class DuckDBWarehouse(Warehouse):
    """A DuckDB file. Connections are short-lived, so parallel runs take turns on the file lock."""

    def __init__(self, path: Path, tables: dict[str, str] | None = None, lock_timeout_s: float = 120.0):
        super().__init__(tables or LOCAL_TABLES)
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    def connect(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                connection = duckdb.connect(str(self.path))
                connection.execute("SET TimeZone = 'UTC'")
                return connection
            except duckdb.IOException as error:
                # Another process (a parallel run) holds the file; wait with jittered backoff.
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise WarehouseError(f"cannot open the DuckDB warehouse {self.path}: {error}") from error
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    def run(self, query: Query, labels: dict[str, str] | None = None) -> QueryResult:
        text = query.render("duckdb", self.tables)
        with self.connect() as connection:
            try:
                relation = connection.sql(text, params=query.params)
                table = relation.to_arrow_table() if relation is not None else pa.table({})
            except duckdb.Error as error:
                raise WarehouseError(f"query {query.name} failed on DuckDB {self.path}: {error}") from error
        return QueryResult(table=table)

    def append(self, logical_table: str, rows: pa.Table) -> None:
        target = self.tables[logical_table]
        with self.connect() as connection:
            connection.register("incoming_rows", rows)
            columns = ", ".join(f'"{name}"' for name in rows.column_names)
            connection.execute(f'INSERT INTO "{target}" ({columns}) SELECT {columns} FROM incoming_rows')
