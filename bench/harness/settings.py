"""The run's settings and shared state: set by bench/run.py (parse_args, main), read everywhere.

Read and assign them as attributes of this module, `settings.SERVER_CORE`, never through
`from .settings import SERVER_CORE`: that copies the value, and an assignment made later
(parse_args, or fixed_one for one variant) would not be seen there.
"""

SERVER_CORE = "0"  # --server-cpus
LOADGEN_CORE = "1"  # --loadgen-cpus
LOADGEN_PROCS = 1  # --loadgen-procs: load generator processes sharing a chat step
WORKERS = "1"  # --workers: gunicorn workers of the Python servers
WORKER_CPU_SHARE = None  # --worker-cpu-share: each server process capped at this fraction of a core
KEEP_DBS = False  # --keep: cleanup() leaves the databases

# what the run has started or made, for cleanup() to remove (also on Ctrl-C)
RUNNING = []  # servers (servers.Server)
LOADGENS = []  # load generators, py-spy and perf processes
CGROUPS = []  # CPU cgroups made for --worker-cpu-share, removed at the end
CREATED_DBS = []  # databases made by pg.create_db
