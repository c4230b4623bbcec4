"""The bench's pure maths: latency statistics over blocks, throughput, the Pareto front, thread lists."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecifar.bench import stats
from edgecifar.bench.core import parse_threads
from edgecifar.bench.pareto import dominates, pareto_front
from edgecifar.errors import EdgeCifarError

latencies = st.lists(st.floats(min_value=1e-6, max_value=10.0, allow_nan=False), min_size=1, max_size=300)
points = st.lists(st.tuples(st.floats(0.001, 100, allow_nan=False), st.floats(0, 1, allow_nan=False)),
                  min_size=0, max_size=40)


@given(latencies, st.integers(1, 12))
def test_blocks_keep_every_sample_in_order(values, blocks):
    parts = stats.split_blocks(values, blocks)
    assert len(parts) == min(blocks, len(values))
    assert np.concatenate(parts).tolist() == values
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@given(latencies, st.integers(1, 12))
def test_headline_median_lies_within_the_block_median_spread(values, blocks):
    s = stats.summarize(values, blocks)
    assert s.runs == len(values)
    assert s.spread_lo_ms <= s.median_ms <= s.spread_hi_ms
    assert min(values) * 1e3 - 1e-9 <= s.spread_lo_ms and s.spread_hi_ms <= max(values) * 1e3 + 1e-9
    assert s.min_ms <= s.p90_ms <= s.p99_ms <= max(values) * 1e3 + 1e-9


def test_one_noisy_block_moves_the_spread_not_the_median():
    quiet = [0.001] * 400                                  # 1 ms
    noisy = quiet[:80] + [0.050] * 80 + quiet[160:]        # a neighbour ran during block 2
    a, b = stats.summarize(quiet, 5), stats.summarize(noisy, 5)
    assert a.median_ms == pytest.approx(1.0) and b.median_ms == pytest.approx(1.0)
    assert a.spread_hi_ms == pytest.approx(1.0)
    assert b.spread_hi_ms == pytest.approx(50.0)           # the noise is visible, not hidden
    assert b.mean_ms > 5                                   # where a plain mean would have been fooled


def test_summary_reports_milliseconds_and_percentiles_of_pooled_runs():
    s = stats.summarize([i / 1000 for i in range(1, 101)], blocks=4)  # 1..100 ms
    assert s.runs == 100 and s.blocks == 4
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.median_ms == pytest.approx(np.median([13, 38, 63, 88]))
    assert s.iqr_ms == pytest.approx(49.5)


def test_summary_of_no_runs_is_nan_not_a_crash():
    s = stats.summarize([], 5)
    assert s.runs == 0 and math.isnan(s.median_ms) and math.isnan(s.spread_pct)


def test_percentile_matches_numpy_and_rejects_bad_q():
    assert stats.percentile([3, 1, 2], 50) == 2
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError):
        stats.percentile([1], 101)
    with pytest.raises(ValueError):
        stats.split_blocks([1], 0)


def test_throughput_is_batch_over_median_call_time():
    assert stats.throughput(32, [0.01] * 10) == pytest.approx(3200)
    assert stats.throughput(32, [0.01] * 8 + [5.0, 5.0], blocks=5) == pytest.approx(3200)
    assert math.isnan(stats.throughput(32, []))


@given(points)
def test_no_point_on_the_front_is_dominated_and_every_other_point_is(pts):
    front = pareto_front(pts)
    for i in front:
        assert not any(dominates(pts[j], pts[i]) for j in range(len(pts)))
    for i in set(range(len(pts))) - set(front):
        assert any(dominates(pts[j], pts[i]) or (pts[j] == pts[i] and j < i) for j in front)


@given(points)
def test_front_runs_fastest_first_with_accuracy_rising(pts):
    front = pareto_front(pts)
    lat = [pts[i][0] for i in front]
    acc = [pts[i][1] for i in front]
    assert lat == sorted(lat) and all(a < b for a, b in zip(acc, acc[1:]))


def test_front_of_a_known_set():
    #        fast+bad     slow+good    dominated     best trade-off
    pts = [(0.05, 0.80), (1.0, 0.92), (0.6, 0.85), (0.3, 0.88), (0.3, 0.70)]
    assert pareto_front(pts) == [0, 3, 1]


def test_failed_rows_never_reach_the_front():
    pts = [(math.nan, 0.99), (0.1, math.nan), (math.inf, 1.0), (1.0, 0.5)]
    assert pareto_front(pts) == [3]
    assert pareto_front([]) == []


@settings(max_examples=50)
@given(st.lists(st.integers(1, 64), min_size=1, max_size=5))
def test_thread_lists_parse_in_order_without_duplicates(values):
    assert parse_threads(",".join(map(str, values))) == list(dict.fromkeys(values))


@pytest.mark.parametrize("text", ["", "0", "1,-2", "two", "1,,x"])
def test_bad_thread_lists_are_one_line_errors(text):
    with pytest.raises(EdgeCifarError, match="--threads"):
        parse_threads(text)
