"""Tests of the yardsticks under benchmarks/."""
