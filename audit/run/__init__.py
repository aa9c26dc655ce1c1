"""The run: harness (driver), engines, chunk worker, rows, run store, inputs, provenance, sampling."""
