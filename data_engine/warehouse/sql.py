"""Loading and composing the BigQuery Standard SQL files in `sql/`, and rendering them for an engine.

SQL files compose by name: a table reference named like another file (`checked_predictions`) becomes
that file's query as a subquery, the way a dbt ref would. Logical table names (`predictions`, `frames`,
`review_selections`) are bound to physical, validated identifiers through the sqlglot syntax tree, so
no text from config is ever pasted into a statement. DuckDB runs the same files transpiled by sqlglot.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot
from sqlglot import exp

LOGICAL_TABLES = ("predictions", "frames", "review_selections")


def sql_dir() -> Path:
    """`sql/` at the repository root; wheels carry it as `data_engine/sql`."""
    packaged = Path(__file__).resolve().parents[1] / "sql"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "sql"


@functools.cache
def _parse_file(name: str) -> exp.Expression:
    path = sql_dir() / f"{name}.sql"
    return sqlglot.parse_one(path.read_text(), read="bigquery")


def load(name: str) -> exp.Expression:
    """The statement in `sql/<name>.sql` (a fresh copy: callers may edit it), with file refs inlined."""
    return inline_files(_parse_file(name).copy())


def inline_files(expression: exp.Expression) -> exp.Expression:
    """Replace each table reference that names a file in `sql/` with that file's query."""
    for table in list(expression.find_all(exp.Table)):
        if table.args.get("db") or not (sql_dir() / f"{table.name}.sql").is_file():
            continue
        table.replace(as_subquery(load(table.name), table.alias_or_name))
    return expression


def as_subquery(query: exp.Expression, alias: str) -> exp.Subquery:
    return exp.Subquery(this=query, alias=exp.TableAlias(this=exp.to_identifier(alias)))


def replace_table(expression: exp.Expression, name: str, replacement: exp.Expression) -> exp.Expression:
    """Read `replacement` (a query) wherever `expression` reads the table or CTE named `name`."""
    for table in list(expression.find_all(exp.Table)):
        if table.name == name and not table.args.get("db"):
            table.replace(as_subquery(replacement.copy(), table.alias_or_name))
    return expression


def combine(statements: dict[str, exp.Expression]) -> exp.Expression:
    """One statement returning the rows of several, each row tagged with its `statement` name.

    Their CTEs are lifted into one WITH (with those of a CTE that only reads a file, `SELECT * FROM
    (<file with CTEs>)`), so that a CTE two statements define alike (same name, same query) is computed
    once: on DuckDB one scan and one anti-join instead of one per statement. Two different CTEs of one
    name are refused. Columns are the union of the statements' (in order); a row has NULL in the others'.
    """
    ctes: dict[str, exp.CTE] = {}
    bodies = {name: _lift_ctes(statement.copy(), ctes) for name, statement in statements.items()}
    columns = list(dict.fromkeys(column for body in bodies.values() for column in body.named_selects))
    branches = []
    for name, body in bodies.items():
        own = set(body.named_selects)
        selects = [exp.Literal.string(name).as_("statement")] + [
            exp.column(column, table=name) if column in own else exp.Null().as_(column) for column in columns
        ]
        branches.append(exp.select(*selects).from_(as_subquery(body, name)))
    union = branches[0]
    for branch in branches[1:]:
        union = exp.union(union, branch, distinct=False)
    union.set("with_", exp.With(expressions=list(ctes.values())))
    return union


def _lift_ctes(statement: exp.Expression, ctes: dict[str, exp.CTE]) -> exp.Expression:
    """Move `statement`'s CTEs (and theirs, depth first) into `ctes`; the statement without its WITH."""
    with_ = statement.args.get("with_")
    if with_:
        statement.set("with_", None)
        for cte in with_.expressions:
            inner = _file_read(cte.this)
            if inner is not None:
                cte.set("this", _lift_ctes(inner, ctes))
            known = ctes.setdefault(cte.alias, cte)
            if known is not cte and known != cte:
                raise ValueError(f"two different CTEs named {cte.alias!r} cannot be combined into one statement")
    return statement


def _file_read(query: exp.Expression) -> exp.Expression | None:
    """The inlined file of a CTE that is only `SELECT * FROM (<file>)`, when that file has CTEs of its own."""
    if not (isinstance(query, exp.Select) and len(query.expressions) == 1 and isinstance(query.expressions[0], exp.Star)):
        return None
    if not query.args.get("from_") or any(
        query.args.get(clause) for clause in ("where", "group", "having", "qualify", "order", "limit", "joins")
    ):
        return None
    source = query.args["from_"].this
    if isinstance(source, exp.Subquery) and source.this.args.get("with_"):
        return source.this
    return None


def prefix_parameters(expression: exp.Expression, prefix: str) -> exp.Expression:
    """Rename every `@name` to `@<prefix>name`, so fragments with the same parameters can be combined."""
    for parameter in expression.find_all(exp.Parameter):
        parameter.set("this", exp.Var(this=prefix + parameter.name))
    return expression


def parameter_names(expression: exp.Expression) -> set[str]:
    return {parameter.name for parameter in expression.find_all(exp.Parameter)}


@dataclass(frozen=True)
class Query:
    """A statement (BigQuery dialect syntax tree) with the values of its `@named` parameters."""

    name: str
    expression: exp.Expression
    params: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = parameter_names(self.expression) - set(self.params)
        if missing:
            raise ValueError(f"query {self.name}: no value for parameter(s) {', '.join(sorted(missing))}")

    def render(self, dialect: str, tables: dict[str, str]) -> str:
        """The SQL text for `dialect` ('bigquery' or 'duckdb') with logical tables bound to `tables`."""
        bound = self.expression.copy()
        for table in list(bound.find_all(exp.Table)):
            if table.name in tables and not table.args.get("db"):
                physical = exp.to_table(tables[table.name], dialect="bigquery")
                for part in physical.find_all(exp.Identifier):
                    part.set("quoted", True)
                if not isinstance(table.parent, (exp.Schema, exp.Create, exp.Insert)):  # keep `AS <name>` in queries
                    physical.set("alias", exp.TableAlias(this=exp.to_identifier(table.alias_or_name)))
                table.replace(physical)
        _filter_valid_rows_at_source(bound)
        if dialect == "duckdb":
            _inline_filter_only_ctes(bound)
        # Comments stay in the files; the emulator mistakes an `@name` inside a comment for a parameter.
        return bound.sql(dialect=dialect, pretty=True, comments=False)


def _filter_valid_rows_at_source(expression: exp.Expression) -> None:
    """Turn `SELECT ... FROM (<checked rows>) WHERE drop_reason IS NULL` into a filter inside the checked query.

    A checked statement labels each row with `CASE WHEN <check> THEN '<reason>' ... END AS drop_reason`;
    testing that label for NULL builds a string per row only to discard it. The same rows are those for
    which no check is true, `NOT COALESCE(<check>, FALSE)` for every check, which engines evaluate column
    by column in the scan (such a scan is about a third faster on DuckDB). The SQL files keep one
    definition of validity.
    """
    for select in list(expression.find_all(exp.Select)):
        where, source = select.args.get("where"), select.args.get("from_")
        if not (where and _is_drop_reason_null(where.this) and source and isinstance(source.this, exp.Subquery)):
            continue
        checked = source.this.this
        checks = _drop_reason_checks(checked)
        if checks is None:
            continue
        for check in checks:
            checked.where(exp.not_(exp.func("COALESCE", exp.paren(check.copy()), exp.false())), copy=False)
        where.pop()


def _is_drop_reason_null(condition: exp.Expression) -> bool:
    return (
        isinstance(condition, exp.Is)
        and isinstance(condition.expression, exp.Null)
        and isinstance(condition.this, exp.Column)
        and condition.this.name == "drop_reason"
    )


def _drop_reason_checks(query: exp.Expression) -> list[exp.Expression] | None:
    """The WHEN conditions of `query`'s `drop_reason` column, if it is a CASE of constant reasons, else None."""
    if not isinstance(query, exp.Select):
        return None
    label = next((e for e in query.expressions if e.alias_or_name == "drop_reason"), None)
    case = label.this if isinstance(label, exp.Alias) else None
    if not isinstance(case, exp.Case) or not isinstance(case.args.get("default"), (type(None), exp.Null)):
        return None
    if not all(isinstance(branch.args.get("true"), exp.Literal) for branch in case.args["ifs"]):
        return None
    return [branch.this for branch in case.args["ifs"]]


def _inline_filter_only_ctes(expression: exp.Expression) -> None:
    """Let DuckDB stream CTEs that only filter and project (`detections` over the day's predictions).

    DuckDB materializes a CTE referenced more than once; for a filter over a large scan that holds the
    whole day in memory, while recomputing it per reference is a cheap streaming scan. CTEs with joins,
    aggregates, windows or subqueries keep the default, since recomputing them costs more than keeping them.
    """
    expensive = (exp.Join, exp.AggFunc, exp.Window, exp.Group, exp.Exists, exp.Distinct)
    for cte in expression.find_all(exp.CTE):
        if not any(cte.this.find(kind) for kind in expensive):
            cte.set("materialized", False)


def bigquery_type(value: object) -> str:
    """The BigQuery parameter type of a Python value (arrays are of the first element's type)."""
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, str):
        return "STRING"
    raise TypeError(f"no BigQuery parameter type for {type(value).__name__}")
