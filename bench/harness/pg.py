"""PostgreSQL on 127.0.0.1:5432: psql, the benchmark's databases, and the CPU its processes spend for one."""

import os
import subprocess
from contextlib import contextmanager

from . import settings
from .procs import proc_cpu_s

PG = dict(host="127.0.0.1", port="5432", user="postgres")

# the PostgreSQL cluster that serves 127.0.0.1:5432 here (Debian's postgresql-15, "15/main")
PG_BIN = "/usr/lib/postgresql/"
PG_CLUSTER = os.environ.get("BENCH_PG_CLUSTER", "15/main")


def psql(db, *args, sql=None, check=True, capture=False):
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "-d", db]
    if sql is not None:
        cmd += ["-c", sql]
    cmd += list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"psql failed ({db}): {r.stderr.strip()}")
    return r.stdout if capture else r


def db_url(db):
    return f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{db}"


def create_db(name, schema_file):
    psql("postgres", sql=f'DROP DATABASE IF EXISTS "{name}"')
    psql("postgres", sql=f'CREATE DATABASE "{name}"')
    settings.CREATED_DBS.append(name)
    psql(name, "-f", schema_file)


def drop_db(name):
    psql("postgres", sql=f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)
    if name in settings.CREATED_DBS:
        settings.CREATED_DBS.remove(name)


@contextmanager
def scratch_db(name, schema_file, keep=False):
    """A fresh database for one server run, dropped when the run ends unless kept (--keep)."""
    create_db(name, schema_file)
    try:
        yield name
    finally:
        if not keep:
            drop_db(name)


def checkpoint(db):
    psql(db, sql="CHECKPOINT", check=False)


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def postgres_cpu(db):
    """{pid: cpu_s} of the PostgreSQL processes that work for database `db`: its backends and
    the server's own auxiliary processes (WAL writer, checkpointer, ...), not the backends of
    other databases."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
        except OSError:
            continue
        cmd = _cmdline(d)
        parts = cmd.split()
        if cmd.startswith(PG_BIN):  # the postmaster of the cluster on 127.0.0.1:5432
            out[int(d)] = proc_cpu_s(int(d))
        elif len(parts) >= 3 and parts[0] == "postgres:" and parts[1] == PG_CLUSTER + ":":
            # backends: "postgres: 15/main: <user> <db> <client>(<port>) <state>";
            # auxiliary processes: "postgres: 15/main: walwriter" and the like
            backend = len(parts) >= 5 and "(" in parts[4]
            if not backend or parts[3] == db:
                out[int(d)] = proc_cpu_s(int(d))
    return out


def postgres_cpu_since(before, after):
    """CPU seconds PostgreSQL spent between two postgres_cpu() readings (new backends count whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
