"""Shopify's real Admin GraphQL schema (2026-10, tests/fixtures/shopify/) for checking queries."""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

from graphql import GraphQLSchema, build_client_schema, parse, validate
from graphql.error import GraphQLError

SCHEMA_VERSION = "2026-10"
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "shopify" / f"admin_{SCHEMA_VERSION}.json.gz"


@functools.cache
def shopify_schema() -> GraphQLSchema:
    with gzip.open(SCHEMA_FILE, "rt", encoding="utf-8") as fh:
        return build_client_schema(json.load(fh)["data"])


def validate_against_shopify(query: str, variables: dict[str, Any] | None = None) -> list[str]:
    """Problems with ``query`` (and its ``variables``) against Shopify's schema; ``[]`` when valid."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        return [exc.message]
    problems = [e.message for e in validate(shopify_schema(), document)]
    if problems or variables is None:
        return problems
    from graphql.execution.values import get_variable_values
    from graphql.language import OperationDefinitionNode

    for op in document.definitions:
        if isinstance(op, OperationDefinitionNode):
            coerced = get_variable_values(shopify_schema(), op.variable_definitions or (), variables)
            if isinstance(coerced, list):
                problems += [e.message for e in coerced]
    return problems
