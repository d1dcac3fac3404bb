"""Benchmarks that print figures. They are never part of the test suite and never assert speed."""
