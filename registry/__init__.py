"""The registry layer: ORM, settings, artifact storage and the services that own transactions.

Nothing in this package imports from the other modelreg packages.
"""

#: The project's version: pyproject.toml reads it from here (``[tool.setuptools.dynamic]``), so
#: a caller that must not pay for ``importlib.metadata`` (the scanner's report) can read it.
__version__ = "0.1.0"
