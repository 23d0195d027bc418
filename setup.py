"""The package list only: every folder under tuning/, models/ and data/, installed under `marstune.`
(pyproject.toml maps the folders; setuptools cannot prefix names found by `packages.find`)."""

from setuptools import find_packages, setup

setup(packages=[f"marstune.{name}" for name in find_packages(include=["tuning*", "models*", "data*"])])
