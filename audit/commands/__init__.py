"""Command line and workflows: the CLI and what each command does."""
