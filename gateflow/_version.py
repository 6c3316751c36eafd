"""The version, in one place: hatch reads it from here for the package metadata
(``[tool.hatch.version]`` in pyproject.toml), so an installed gateflow reports the same
through ``importlib.metadata.version("gateflow")``, ``gateflow.__version__`` and
``gateflow --version``."""

__version__ = "0.1.0"
