"""PreparedStatements against a real PostgreSQL: what is prepared, and what runs unprepared."""

from __future__ import annotations

import psycopg2
import pytest

from app.prepared import PreparedStatements

STATEMENTS = PreparedStatements(
    {
        "t_sum": "SELECT %(a)s + %(b)s",
        "t_pairs": "SELECT count(*) FROM unnest(%(names)s, %(ids)s) AS pair(name, id) WHERE id > %(a)s",
    },
    types={"a": "integer", "b": "integer", "names": "text[]", "ids": "bigint[]"},
    planned_each_time=frozenset({"t_pairs"}),
)


@pytest.fixture
def cur(database_url: str):
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cursor:
        yield cursor
    conn.close()


def test_a_statement_planned_each_time_is_not_prepared_but_runs_with_its_values(cur):
    STATEMENTS.prepare(cur)
    cur.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 't\\_%' ORDER BY name")
    assert cur.fetchall() == [("t_sum",)]
    cur.execute(STATEMENTS.execute["t_sum"], {"a": 2, "b": 3})
    assert cur.fetchone() == (5,)
    cur.execute(STATEMENTS.execute["t_pairs"], {"names": ["x", "y", "z"], "ids": [1, 5, 9], "a": 2})
    assert cur.fetchone() == (2,)


def test_a_statement_planned_each_time_is_named_in_a_comment_for_the_logs():
    assert STATEMENTS.execute["t_pairs"].startswith("/* t_pairs */ SELECT")
    assert STATEMENTS.execute["t_sum"] == "EXECUTE t_sum(%(a)s::integer, %(b)s::integer)"
