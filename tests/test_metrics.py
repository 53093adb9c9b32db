"""The lock-free metrics of hot paths export what prometheus_client's own would."""

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from app.metrics import QuickHistogram, Tally, _QuickCollector

BUCKETS = (0.001, 0.01, 0.1, 1)
SAMPLES = (0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.5, 1, 3, 0)


def exported(*collectors) -> list[str]:
    """The sample lines of /metrics for these collectors (no HELP/TYPE, no _created)."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if not line.startswith("#") and "_created" not in line
    ]


def test_a_quick_histogram_exports_the_buckets_count_and_sum_of_a_prometheus_histogram():
    quick = QuickHistogram("h", "doc", BUCKETS)
    reference = Histogram("h", "doc", buckets=BUCKETS, registry=None)
    for value in SAMPLES:
        quick.observe(value)
        reference.observe(value)

    class Reference:
        def collect(self):
            return reference.collect()

    assert exported(_QuickCollector(quick)) == exported(Reference())


@pytest.mark.parametrize(
    ("value", "bucket"),
    [(0.0, 0), (0.001, 0), (0.0010001, 1), (1.0, 3), (1.5, 4), (float("inf"), 4)],
)
def test_a_value_on_a_bound_counts_in_that_bound_s_bucket_and_above_every_bound_in_the_last(value, bucket):
    quick = QuickHistogram("h", "doc", BUCKETS)
    quick.observe(value)
    assert quick.counts == [1 if i == bucket else 0 for i in range(len(BUCKETS) + 1)]


def test_tallies_of_one_name_are_the_labelled_series_of_one_counter():
    room = Tally("stored", "doc", {"kind": "room"})
    dm = Tally("stored", "doc", {"kind": "dm"})
    plain = Tally("frames", "doc")
    room.value += 3
    dm.value += 1
    assert exported(_QuickCollector(room, dm, plain)) == [
        'stored_total{kind="room"} 3.0',
        'stored_total{kind="dm"} 1.0',
        "frames_total 0.0",
    ]
