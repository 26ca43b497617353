"""The package's version: one place, read by pyproject.toml (setuptools' `attr:`), the public
surface and every row and manifest a run writes."""

__version__ = "0.1.0"
