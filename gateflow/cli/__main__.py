"""``python -m gateflow.cli``: the command line (as ``python -m gateflow``)."""

from gateflow.__main__ import main

if __name__ == "__main__":
    main()
