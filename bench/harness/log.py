"""The progress log: lines starting [bench] on stderr."""

import sys


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)
