"""``python -m gateflow`` and the ``gateflow`` script: the same command line.

The signal handlers are installed before anything heavy is imported (typer, SymPy): a
Ctrl-C or SIGTERM at any moment after start-up ends the run with one line and status
130/143, never a ``KeyboardInterrupt`` traceback from an import half-way.
"""


def main() -> None:
    """Install the signal handlers, then run the command line."""
    from gateflow._interrupt import install

    install()
    from gateflow.cli import main as run

    run()


if __name__ == "__main__":
    main()
