"""Fixtures shared by the whole suite. Role-specific fixtures live in the conftest.py
of each test folder (tests/compose/, tests/scheduler/, tests/runtime/, tests/cluster/…)."""
