"""``python -m gateflow``: the same command line as the ``gateflow`` script."""

from gateflow.cli import main

main()
