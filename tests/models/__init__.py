"""Tests of tasks.models: every Recommender against one contract (contract.py), plus each
module's own checks."""
