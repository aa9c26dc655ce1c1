"""``python -m audit``: the ``pulse-audit`` command line."""

from audit.commands.cli import main

if __name__ == "__main__":
    main()
