"""The database layer's own checks, against a real PostgreSQL."""

from __future__ import annotations

import os

import pytest
from conftest import sql, wait_for

from app import db


@pytest.fixture
def many_descriptors():
    """Hold 1,100 descriptors open, as a worker with that many clients does."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    yield
    for fd in held:
        os.close(fd)


def test_idle_connection_check_works_past_descriptor_1023(database_url, many_descriptors):
    """select() refuses descriptors above 1023; a live connection must not be taken for
    closed there (the group commit reconnected for every batch), nor a dead one for live."""
    conn = db.connect(database_url)
    try:
        assert conn.fileno() > 1024
        assert not db.closed_by_server(conn)
        sql(database_url, "SELECT pg_terminate_backend(%s)", (conn.get_backend_pid(),))
        # the server's goodbye arrives a moment later
        wait_for(lambda: db.closed_by_server(conn), 5, "the terminated connection seen as closed")
    finally:
        conn.close()
