"""tasks/validate/gx.py: the GX suite built from the same RULES names only columns of the
schema it validates, and a run reports what it validated."""

from __future__ import annotations

import polars as pl
import pytest

from schemas.interactions import BRONZE, SILVER
from tasks.config import Settings
from tasks.validate import build_suite, run_gx
from tests.validate.samples import DAY, bronze_rows


@pytest.mark.parametrize("schema", [SILVER, BRONZE], ids=["silver", "bronze"])
def test_gx_suite_names_only_columns_of_the_schema(schema) -> None:
    suite = build_suite(schema, DAY, Settings())
    named = set()
    for exp in suite.expectations:
        kw = exp.configuration.kwargs
        named |= {kw["column"]} if "column" in kw else set(kw.get("column_list", []))
    assert named and named <= set(schema.names)
    types = {type(e).__name__ for e in suite.expectations}
    assert {"ExpectColumnToExist", "ExpectColumnValuesToBeOfType"} <= types
    assert "ExpectCompoundColumnsToBeUnique" in types
    assert ("ExpectColumnValuesToBeNull" in types) == (schema is BRONZE)  # parse_error


def test_run_gx_samples_and_fails_on_a_broken_contract() -> None:
    rows = bronze_rows(*[{"item_id": f"i{k}"} for k in range(12)]).select(SILVER.names)
    ok = run_gx(rows, DAY, Settings(gx_sample_rows=5))
    assert (ok["success"], ok["rows_validated"], ok["rows_total"]) == (True, 5, 12)
    broken = rows.with_columns(event_type=pl.lit("hover"))  # silver must never hold this
    bad = run_gx(broken, DAY, Settings())
    assert bad["success"] is False and bad["statistics"]["unsuccessful_expectations"] >= 1
