"""Thin shim: the package is described in pyproject.toml (the layout keeps a setup.py)."""

from setuptools import setup

setup()
