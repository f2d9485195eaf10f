"""Small helpers that turn counts and rows into Dagster metadata a person can read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from data_engine.warehouse import QueryResult


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> dg.MarkdownMetadataValue:
    if not rows:
        return dg.MetadataValue.md("_no rows_")
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row.get(column, "")).replace("|", "\\|").replace("\n", " ") for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def counts_table(counts: dict[str, int], key: str, value: str = "count") -> dg.MarkdownMetadataValue:
    rows = [{key: name, value: count} for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    return markdown_table(rows, [key, value])


def query_cost(result: QueryResult) -> dict[str, object]:
    """What a warehouse query cost, where the engine says (BigQuery: the dry run's estimate, bytes billed)."""
    if result.bytes_estimated is None:
        return {}
    return {"bytes_estimated": result.bytes_estimated, "bytes_billed": result.bytes_billed or 0}
