"""benchmarks/instruments.py: fractions of peak and ratios only against peaks measured beside the run,
disturbed runs flagged and left out of the medians (no timing here: values are given)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from instruments import (  # noqa: E402
    BUSY_CORES,
    DISTURBED_SPREAD,
    Bracketed,
    cpu_seconds,
    other_cores,
    steady_median,
)


def test_spread_is_max_over_min_of_the_adjacent_peaks():
    assert Bracketed(1.0, (400.0, 440.0)).spread == pytest.approx(0.10)
    assert Bracketed(1.0, (440.0, 400.0)).spread == pytest.approx(0.10)  # order does not matter
    assert Bracketed(1.0, (300.0, 300.0)).spread == 0.0
    assert math.isinf(Bracketed(1.0, ()).spread)
    assert math.isinf(Bracketed(1.0, (0.0, 300.0)).spread)  # a failed peak cannot vouch for a run


def test_disturbed_exactly_when_the_peaks_differ_by_more_than_the_limit():
    assert DISTURBED_SPREAD == 0.15
    assert not Bracketed(1.0, (400.0, 459.0)).disturbed  # 14.75 %: steady
    assert Bracketed(1.0, (400.0, 460.5)).disturbed
    assert Bracketed(1.0, (446.0, 220.0)).disturbed  # the 02:45 → 02:52 UTC swing on this VM
    assert Bracketed(1.0, ()).disturbed


def test_other_processes_busy_during_the_run_flag_it_even_between_steady_peaks():
    assert BUSY_CORES == 0.2
    assert not Bracketed(1.0, (216.0, 221.0), others=0.2).disturbed
    assert Bracketed(1.0, (216.0, 221.0), others=1.4).disturbed  # one core taken all along: both peaks halved
    assert Bracketed(1.0, (216.0, 221.0), others=float("nan")).disturbed  # not measured: no quiet claimed


def test_other_cores_is_busy_time_minus_own_time_over_the_wall_time():
    before, after = (1000.0, 50.0), (1013.0, 58.0)  # 13 CPU-s busy in all, 8 of them ours, in 5 s
    assert other_cores(before, after, 5.0) == pytest.approx(1.0)
    assert other_cores(before, (1007.9, 58.0), 5.0) == 0.0  # tick rounding never gives a negative load
    busy, own = cpu_seconds()
    assert (busy >= own > 0) or (math.isnan(busy) and math.isnan(own))


def test_fraction_divides_by_the_larger_adjacent_peak():
    run = Bracketed(668.0, (220.0, 250.0))  # image-steps/s between two peaks (GFLOP/s)
    share = run.fraction_of_peak(0.4188)  # GFLOP per image-step
    assert share.value == pytest.approx(668.0 * 0.4188 / 250.0)
    assert share.peaks == run.peaks and share.disturbed == run.disturbed
    assert run.fraction_of_peak(1.0).others == 0.0
    assert Bracketed(668.0, (440.0, 430.0), others=0.7).fraction_of_peak(1.0).disturbed


def test_ratio_carries_both_runs_peaks_so_a_swing_in_either_run_flags_the_pair():
    first = Bracketed(668.0, (440.0, 430.0))
    steady = Bracketed(438.0, (430.0, 420.0))
    pair = first.over(steady)
    assert pair.value == pytest.approx(668.0 / 438.0)
    assert pair.peaks == (440.0, 430.0, 430.0, 420.0) and not pair.disturbed
    swung = Bracketed(438.0, (430.0, 220.0))
    assert first.over(swung).disturbed and swung.over(first).disturbed
    busy = Bracketed(438.0, (430.0, 420.0), others=0.9)
    assert first.over(busy).others == 0.9 and busy.over(first).disturbed


def test_steady_median_leaves_out_disturbed_values_and_counts_the_rest():
    items = [Bracketed(1.52, (446.0, 220.0)),  # disturbed: left out however large
             Bracketed(1.40, (440.0, 450.0)),
             Bracketed(1.30, (430.0, 440.0)),
             Bracketed(1.60, (420.0, 430.0))]
    assert steady_median(items) == (pytest.approx(1.40), 3)
    assert steady_median(items[1:3]) == (pytest.approx(1.35), 2)


def test_steady_median_of_only_disturbed_values_is_nan_with_none_kept():
    value, kept = steady_median([Bracketed(1.27, (446.0, 220.0))])
    assert math.isnan(value) and kept == 0
    value, kept = steady_median([])
    assert math.isnan(value) and kept == 0


PEAK_WINDOW_PROBE = """
import sys
import numpy as np
sys.path.insert(0, "benchmarks")
from instruments import peak_rss_gb, start_peak_window
from pulse_engine.allocator import keep_large_buffers
print(keep_large_buffers())
earlier = np.ones(50_000_000)  # 400 MB, written so that it is resident
del earlier
base = start_peak_window()
idle = peak_rss_gb() - base
inside = np.ones(25_000_000)  # 200 MB
print(idle, peak_rss_gb() - base)
"""


def test_a_runs_peak_memory_window_sees_its_own_allocation_and_not_an_earlier_ones():
    """The instrument behind the per-run peak memory of benchmarks/stylegan2_batch.py, on planted sizes (in a
    child process, so that the malloc setting stays there): an earlier 400 MB buffer, freed, must not count
    in the next window even under glibc's large-buffer setting (the benchmarks', which keeps freed blocks in
    the heap); a 200 MB buffer inside the window must."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", PEAK_WINDOW_PROBE], cwd=root, capture_output=True, text=True,
                          check=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    setting, numbers = done.stdout.strip().splitlines()
    idle, inside = map(float, numbers.split())
    assert "thresholds set" in setting and idle < 0.05 and 0.19 < inside < 0.25, done.stdout
