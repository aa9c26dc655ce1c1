"""Command line and workflows: the CLI and what each command does.

Imported before any command module loads torch: OpenMP threads are told to sleep while they wait
(:func:`pulse_engine.openmp.prefer_passive_waits`), unless the user set ``OMP_WAIT_POLICY``.
"""

from pulse_engine.openmp import prefer_passive_waits

prefer_passive_waits()
