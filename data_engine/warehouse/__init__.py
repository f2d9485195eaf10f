"""The prediction warehouse: one interface, with BigQuery (prod) and DuckDB (local, tests) engines."""

from data_engine.warehouse.base import QueryOverBudget, QueryResult, Warehouse, WarehouseError

__all__ = ["QueryOverBudget", "QueryResult", "Warehouse", "WarehouseError"]
