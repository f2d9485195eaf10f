"""List-endpoint semantics of CVAT: JSON-Logic `filter`, simple equality filters, `sort`, pages.

A `ListSpec` names, per resource, which fields can be filtered/sorted and how to read them from a
record. Filters are compiled once per request into a Python predicate, so listing 10,000 tasks is a
single pass over the records.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

DEFAULT_PAGE_SIZE = 10


class BadQuery(ValueError):
    """Rendered as HTTP 400, like CVAT's validation errors for bad filters."""


@dataclass
class FieldSpec:
    getter: Callable[[Any], Any]
    kind: str = "str"  # str | int | datetime


@dataclass
class ListSpec:
    fields: dict[str, FieldSpec]
    default_sort: str = "-id"
    # query params that are simple equality filters (CVAT's SimpleFilter), param -> field name
    simple_filters: dict[str, str] = field(default_factory=dict)


def parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as e:
        raise BadQuery(f"Invalid date value: {value!r}") from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _coerce(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        return parse_datetime(value)
    if kind == "int":
        try:
            return int(value)
        except (TypeError, ValueError) as e:
            raise BadQuery(f"Invalid integer value: {value!r}") from e
    return value if isinstance(value, str) else str(value)


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        return op == "==" and left is right or op == "!=" and left is not right
    try:
        if op == "==":
            return left == right
        if op == "!=":
            return left != right
        if op == "<":
            return left < right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        if op == ">=":
            return left >= right
    except TypeError:
        return False
    raise BadQuery(f"Unsupported operator: {op}")


def compile_filter(expr: Any, spec: ListSpec) -> Callable[[Any], bool]:
    """JSON Logic -> predicate. Supports the operators CVAT's JsonLogicFilter accepts."""

    def var_name(node: Any) -> str | None:
        if isinstance(node, dict) and list(node) == ["var"]:
            name = node["var"]
            if isinstance(name, list):
                name = name[0]
            if name not in spec.fields:
                raise BadQuery(f"Unsupported filter field: {name!r}")
            return name
        return None

    def operand(node: Any, kind: str) -> Callable[[Any], Any]:
        name = var_name(node)
        if name is not None:
            return spec.fields[name].getter
        value = _coerce(kind, node)
        return lambda _record: value

    def build(node: Any) -> Callable[[Any], bool]:
        if not isinstance(node, dict) or len(node) != 1:
            raise BadQuery(f"Invalid filter: {node!r}")
        ((op, args),) = node.items()
        if op == "var":
            getter = operand(node, "str")
            return lambda r: bool(getter(r))
        if not isinstance(args, list):
            args = [args]
        if op in ("and", "or"):
            parts = [build(a) for a in args]
            combine = all if op == "and" else any
            return lambda r: combine(p(r) for p in parts)
        if op == "!":
            inner = build(args[0])
            return lambda r: not inner(r)
        if op == "!!":
            inner = build(args[0])
            return lambda r: bool(inner(r))
        if op == "in":
            if var_name(args[0]) is not None:  # {"in": [{"var": f}, [v1, v2]]}
                kind = spec.fields[var_name(args[0])].kind
                getter = spec.fields[var_name(args[0])].getter
                values = {_coerce(kind, v) for v in args[1]}
                return lambda r: getter(r) in values
            if var_name(args[1]) is not None:  # {"in": ["substr", {"var": f}]} = contains
                getter = spec.fields[var_name(args[1])].getter
                needle = str(args[0]).lower()
                return lambda r: needle in str(getter(r) or "").lower()
            raise BadQuery(f"Invalid 'in' filter: {node!r}")
        if op in ("==", "!=", "<", "<=", ">", ">="):
            kinds = [spec.fields[n].kind for n in map(var_name, args) if n is not None]
            kind = kinds[0] if kinds else "str"
            getters = [operand(a, kind) for a in args]
            if len(getters) == 3 and op in ("<", "<="):  # between: {"<=": [low, {"var"}, high]}
                low, mid, high = getters
                return lambda r: _compare(op, low(r), mid(r)) and _compare(op, mid(r), high(r))
            if len(getters) != 2:
                raise BadQuery(f"Invalid filter: {node!r}")
            left, right = getters
            return lambda r: _compare(op, left(r), right(r))
        raise BadQuery(f"Unsupported filter operator: {op!r}")

    return build(expr)


def _sort_key(getter: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def key(record: Any) -> tuple:
        value = getter(record)
        return (value is None, value if value is not None else 0)

    return key


def apply_query(records: Iterable[Any], spec: ListSpec, query: dict[str, str]) -> list[Any]:
    """Filter and sort records by the query params CVAT list endpoints accept."""
    predicates: list[Callable[[Any], bool]] = []
    for param, field_name in spec.simple_filters.items():
        if query.get(param) not in (None, ""):
            fs = spec.fields[field_name]
            wanted = _coerce(fs.kind, query[param])
            predicates.append(lambda r, g=fs.getter, w=wanted: g(r) == w)
    if query.get("filter"):
        try:
            expr = json.loads(query["filter"])
        except ValueError as e:
            raise BadQuery(f"filter is not valid JSON: {e}") from e
        predicates.append(compile_filter(expr, spec))
    selected = [r for r in records if all(p(r) for p in predicates)]

    # DRF's OrderingFilter silently drops unknown fields; CVAT inherits that.
    sort_fields = [f.strip() for f in (query.get("sort") or spec.default_sort).split(",") if f.strip()]
    sort_fields = [f for f in sort_fields if f.lstrip("-") in spec.fields] or [spec.default_sort]
    for name in reversed(sort_fields):
        getter = spec.fields[name.lstrip("-")].getter
        selected.sort(key=_sort_key(getter), reverse=name.startswith("-"))
    return selected


def paginate(items: Sequence[Any], query: dict[str, str], page_url: str) -> tuple[list[Any], dict]:
    """DRF PageNumberPagination as CVAT configures it (page_size=all allowed, no maximum)."""
    raw_size = query.get("page_size")
    try:
        page_size = sys.maxsize if raw_size == "all" else int(raw_size or 0)
    except ValueError:
        page_size = 0
    page_size = page_size if page_size > 0 else DEFAULT_PAGE_SIZE
    try:
        page = int(query.get("page") or 1)
    except ValueError:
        page = 0
    last_page = max(1, -(-len(items) // page_size))
    if not 1 <= page <= last_page:
        raise PageNotFound("Invalid page.")
    start = (page - 1) * page_size
    results = list(items[start : start + page_size])

    def link(target: int | None) -> str | None:
        if target is None:
            return None
        params = {k: v for k, v in query.items() if k != "page"}
        if target > 1:
            params["page"] = str(target)
        return page_url + ("?" + urlencode(params) if params else "")

    meta = {
        "count": len(items),
        "next": link(page + 1 if page < last_page else None),
        "previous": link(page - 1 if page > 1 else None),
    }
    return results, meta


class PageNotFound(LookupError):
    """Rendered as HTTP 404 {"detail": "Invalid page."} like DRF."""
