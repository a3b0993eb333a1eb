"""Prefect flows: they compose the plain functions of `tasks/` and hold no business logic."""
