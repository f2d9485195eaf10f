"""What the rest of the product needs from a warehouse: run a `sql/` query to Arrow, append rows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from data_engine.warehouse import sql
from data_engine.warehouse.sql import Query

if TYPE_CHECKING:
    import pyarrow as pa


class WarehouseError(RuntimeError):
    """A warehouse query or write failed; the message names the statement."""


class QueryOverBudget(WarehouseError):
    """The dry-run estimate is above `max_bytes_billed`: the query was not run."""


@dataclass(frozen=True)
class QueryResult:
    table: pa.Table
    # Bytes the engine says the query scans (a BigQuery dry run); None where the engine cannot tell.
    bytes_estimated: int | None = None
    bytes_billed: int | None = None


class Warehouse(ABC):
    """Runs the BigQuery-dialect statements of `sql/` against one engine.

    `tables` binds the logical table names the SQL files use to physical identifiers.
    """

    def __init__(self, tables: dict[str, str]):
        missing = set(sql.LOGICAL_TABLES) - set(tables)
        if missing:
            raise ValueError(f"no physical table for {', '.join(sorted(missing))}")
        self.tables = tables

    @abstractmethod
    def run(self, query: Query, labels: dict[str, str] | None = None) -> QueryResult:
        """Run `query`; `labels` attribute its cost (model, partition, run id) where the engine keeps them."""

    @abstractmethod
    def append(self, logical_table: str, rows: pa.Table) -> None:
        """Append `rows` to a table (used only for the review-selection ledger)."""

    def ensure_selection_ledger(self) -> None:
        """Create the review-selection ledger table if it does not exist yet."""
        self.run(Query("review_selections_table", sql.load("review_selections_table")))
