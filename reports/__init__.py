"""Report rendering: templates, plots and model cards."""
