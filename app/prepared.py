"""Statements prepared once per database connection, so that PostgreSQL plans them once.

A statement that runs on every join or group commit costs PostgreSQL more to parse and
plan than to run (bench/README.md, items 9 and 14). Each set here is written with
psycopg2's `%(name)s` placeholders and a SQL type per parameter; `prepare` runs on every
new connection, and `execute[name]` is the `EXECUTE` to send instead of the statement (or,
for one planned each time, the statement itself).
"""

from __future__ import annotations

import re

# psycopg2's named placeholder, %(name)s
PLACEHOLDER = re.compile(r"%\((\w+)\)s")

# How the connections that run prepared statements plan them (the pool's, the group
# commit's lanes), set once per connection before preparing:
# - generic plans: a statement is planned once per connection, not at each run (planning
#   these costs PostgreSQL more than running them);
# - index scans forced: a generic plan is made from the statistics of its moment and kept
#   for the connection's life, and a table small then (room_presence right after a
#   restart, `rooms` between vacuums) would be scanned whole at every lookup once it has
#   grown. Every statement there looks rows up by key; a table that no index serves is
#   still scanned;
# - no JIT: a plan whose scan is so disabled costs more than jit_above_cost and would be
#   compiled at every run; statements of milliseconds never gain from it.
PLANNER_SETTINGS = ("SET plan_cache_mode = force_generic_plan", "SET enable_seqscan = off", "SET jit = off")


def plan_as_prepared(cur) -> None:
    """Set PLANNER_SETTINGS on the cursor's connection: before its statements are prepared."""
    cur.execute("; ".join(PLANNER_SETTINGS))


class PreparedStatements:
    """Named statements sharing one table of parameter types."""

    def __init__(
        self,
        statements: dict[str, str],
        types: dict[str, str],
        planned_each_time: frozenset[str] = frozenset(),
    ) -> None:
        self.statements = statements
        self.types = types  # parameter -> SQL type; their order numbers the $n
        # Statements sent whole, never prepared, so that PostgreSQL plans each run with its
        # values and the tables as they are (a generic plan guesses an array parameter's
        # length, and keeps what it chose for a table's size of its moment).
        self.planned_each_time = planned_each_time
        self.execute = {
            name: self.inline(name) if name in planned_each_time else self._execute(name) for name in statements
        }

    def parameters(self, name: str) -> list[str]:
        """The parameters a statement uses, in the order of its $n."""
        return [p for p in self.types if f"%({p})s" in self.statements[name]]

    def prepare(self, cur) -> None:
        """Prepare every statement on the cursor's connection (one round trip)."""
        commands = []
        for name, sql in self.statements.items():
            if name in self.planned_each_time:
                continue
            names = self.parameters(name)
            types = f"({', '.join(self.types[n] for n in names)})" if names else ""
            commands.append(f"PREPARE {name} {types} AS {_numbered(sql, names)}")
        cur.execute(";\n".join(commands))

    def inline(self, name: str) -> str:
        """The statement itself with its parameters cast, to run it unprepared; named in a
        comment, which logs and pg_stat_statements show."""
        cast = PLACEHOLDER.sub(lambda m: f"{m.group(0)}::{self.types[m.group(1)]}", self.statements[name])
        return f"/* {name} */ {cast}"

    def _execute(self, name: str) -> str:
        """`EXECUTE name(...)` with the statement's parameters as psycopg2 placeholders."""
        arguments = ", ".join(f"%({p})s::{self.types[p]}" for p in self.parameters(name))
        return f"EXECUTE {name}({arguments})" if arguments else f"EXECUTE {name}"


def _numbered(sql: str, names: list[str]) -> str:
    """The statement with its %(name)s placeholders numbered ($1, $2, ...) as in `names`."""
    return PLACEHOLDER.sub(lambda m: f"${names.index(m.group(1)) + 1}", sql)
