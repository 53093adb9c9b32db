"""Helpers the test modules share: servers, clients, frames, databases and faults.

Fixtures stay in tests/conftest.py; everything a test imports comes from here.
"""
