"""benchmarks/gpu_check.py (``make gpu-check``): the no-CUDA path and the CPU-side instruments."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_check  # noqa: E402  (found through the sys.path entry above)
import instruments  # noqa: E402
from pulse_search import flops_per_image_step  # noqa: E402

from pulse_engine.downsample import BicubicDownsample  # noqa: E402
from pulse_engine.search import SearchConfig, pulse_search  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the no-CUDA path does not apply")
def test_without_cuda_it_prints_one_line_and_exits_0():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py")], check=False, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA device (torch "), done.stdout


def test_no_cuda_line_names_the_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "a CPU-only build" in gpu_check.no_cuda_line()
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert "built with CUDA 12.8 but no device is visible" in gpu_check.no_cuda_line()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu_check.no_cuda_line() is None


def test_best_rate_is_flops_over_the_fastest_call():
    ticks = iter([0.0, 2.0, 10.0, 10.5, 20.0, 21.0])  # calls of 2 s, 0.5 s, 1 s
    calls = []
    rate = instruments.best_rate(lambda: calls.append(1), 4e9, repeats=3, clock=lambda: next(ticks))
    assert rate == pytest.approx(8.0)  # 4 GFLOP in 0.5 s
    assert len(calls) == 5  # two warm-ups, three timed


def test_torch_mm_peak_runs_on_cpu():
    rate = instruments.torch_mm_peak("cpu", n=64, repeats=2)
    assert math.isfinite(rate) and rate > 0


def test_counted_flops_match_the_analytic_count(tiny_generator):
    low = BicubicDownsample(4)(torch.rand(3, 3, 32, 32))
    counted = instruments.search_step_flops(tiny_generator, low)
    assert counted == pytest.approx(3 * flops_per_image_step(tiny_generator, 4, dense_downsample=True), rel=0.01)


def test_flop_counter_over_counts_a_grouped_weight_gradient_so_steps_are_counted_per_image(tmp_path):
    # Why search_step_flops counts one image: torch's counter ignores groups in a grouped
    # convolution's weight gradient (StyleGAN2's modulated convolution, one group per image).
    from torch.utils.flop_counter import FlopCounterMode

    batch, c_in, c_out, k, size = 3, 4, 5, 3, 6
    x = torch.rand(1, batch * c_in, size, size)
    weight = torch.rand(batch * c_out, c_in, k, k, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.conv2d(x, weight, padding=1, groups=batch).sum().backward()
    per_pass = 2 * batch * c_out * c_in * k * k * size * size  # multiply-adds × 2, analytic
    assert counter.get_total_flops() == per_pass + batch * per_pass  # forward + B × the weight gradient

    from pulse_engine.generators.stylegan2_loaders import load_stylegan2

    path = gpu_check.random_stylegan2_checkpoint(tmp_path / "r.pt", size=8, style_dim=8, n_mlp=2,
                                                 channels={4: 4, 8: 4})
    model = load_stylegan2(path, "cpu", fit_samples=1000).set_fused(True)  # the grouped form (CUDA's default)
    low = BicubicDownsample(2)(torch.rand(3, 3, 8, 8))
    one = instruments.search_step_flops(model, low[:1])
    assert instruments.search_step_flops(model, low) == 3 * one
    with FlopCounterMode(display=False) as whole:  # the batch counted at once: more than 3 images' work
        pulse_search(model, low, SearchConfig(steps=1), batch_size=3)
    with FlopCounterMode(display=False) as single:
        pulse_search(model, low[:1], SearchConfig(steps=1), batch_size=1)
    assert whole.get_total_flops() > 3 * single.get_total_flops()
    model.set_fused(False)  # the shared form (the CPU default) has no grouped convolution: counted exactly
    counts = []
    for batch in (3, 1):
        with FlopCounterMode(display=False) as counter:
            pulse_search(model, low[:batch], SearchConfig(steps=1), batch_size=batch)
        counts.append(counter.get_total_flops())
    assert counts[0] == 3 * counts[1]


def test_cpu_rehearsal_runs_every_step_of_the_check(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--device", "cpu", "--size", "32",
                           "--channels", "16", "--steps", "1", "--skip-audit", "--fit-samples", "2000",
                           "--mm-size", "256", "--out", str(tmp_path / "r.md")],
                          check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "r.md").read_text()
    assert "gpu-check — cpu (rehearsal)" in table
    assert table.count("| search, dcgan-digiface ×4 |") == 3
    assert table.count("| search, random StyleGAN2 32 px ×8 |") == 3
    assert "FAILED" not in table  # (the audit step has its own test below)


def test_measure_search_on_a_tiny_model(tiny_generator):
    row = gpu_check.measure_search("tiny", tiny_generator, batch=2, steps=3, factor=4)
    assert row.what == "tiny" and row.batch == 2 and row.note == "" and row.memory_gb is None
    assert row.rate > 0
    counted = flops_per_image_step(tiny_generator, 4, dense_downsample=True)  # gpu_check counts what runs
    assert row.gflops == pytest.approx(row.rate * counted / 1e9, rel=0.01)


def test_random_stylegan2_checkpoint_loads_and_is_measured(tmp_path):
    from pulse_engine.generators.stylegan2_loaders import load_stylegan2

    path = gpu_check.random_stylegan2_checkpoint(tmp_path / "r.pt", size=8, style_dim=8, n_mlp=2,
                                                 channels={4: 4, 8: 4})
    model = load_stylegan2(path, "cpu", fit_samples=1000)
    assert model.resolution == 8 and model.latent_shape == (4, 8)
    row = gpu_check.measure_search("sg2", model, batch=1, steps=2, factor=2)
    assert row.rate > 0 and row.gflops > 0


def test_summary_table_formats_rates_fractions_and_missing_values():
    rows = [gpu_check.Row("CUDA tests", note="passed: 2 passed"),
            gpu_check.Row("search", 4, 123.45, gflops=50.0, memory_gb=1.234),
            gpu_check.Row("search", 16, note="out of memory"),
            gpu_check.Row("audit", 10, 0.5, unit="rows/s", note="20 rows")]
    table = gpu_check.summary_table(rows, fp32_peak=200.0, tf32_peak=400.0).splitlines()
    assert table[0].startswith("| workload | batch | rate | GFLOP/s | % fp32 mm peak | % TF32 mm peak | GPU GB")
    assert table[2] == "| CUDA tests | — | — | — | — | — | — | passed: 2 passed |"
    assert table[3] == "| search | 4 | 123.5 image-steps/s | 50.0 | 25.0% | 12.5% | 1.23 |  |"
    assert table[4] == "| search | 16 | — | — | — | — | — | out of memory |"
    assert table[5] == "| audit | 10 | 0.5 rows/s | — | — | — | — | 20 rows |"


def test_audit_step_runs_the_cli_on_a_random_stylegan2(tmp_path):
    path = gpu_check.random_stylegan2_checkpoint(tmp_path / "r.pt", size=16, style_dim=8, n_mlp=2,
                                                 channels={4: 4, 8: 4, 16: 4})
    row = gpu_check.run_audit(path, torch.device("cpu"), 2, tmp_path / "audit")
    assert row.note.startswith("20 rows in "), row.note
    assert row.unit == "rows/s" and row.rate > 0
