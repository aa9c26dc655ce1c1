"""pulse-audit: harness, command line, classifiers and metrics for auditing face upsamplers."""
