"""metarec's work: one module per pipeline stage, plain typed functions (no Prefect needed)."""
