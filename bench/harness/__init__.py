"""The benchmark harness behind bench/run.py, one module per job.

settings   the run's settings and shared state, read and set as settings.NAME
paths      where bench/ and the repository are
log        the progress log on stderr
procs      /proc: process trees' CPU and memory, the machine's busy time, waiting for quiet
pg         PostgreSQL: psql, the benchmark's databases, the CPU its processes spend for one
servers    the servers under test: start (pinned, CPU-capped), stop; the run's cleanup
loadgen    the Node load generator: one process, several sharing a chat step, one driven by stdin
windows    what a step costs: over the whole run (Sampler), between the generator's MARKs (Window)
pyspy      py-spy profiles of a Python server's worker (--profile)
report     the report's Markdown: numbers, ratios, tables, medians
scenarios  chat, idle, history, storm (per server), fixed, bigroom (interleaved), and their tables
"""
