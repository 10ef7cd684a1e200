"""The one packaging detail pyproject.toml cannot express (everything else is there).

The YAML schemas live in the top-level ``schemas/`` folder, their only home in the
repository. They are installed as the data package ``reduce._schemas`` (read with
``importlib.resources`` by ``reduce.schemas``), so a wheel or a non-editable install
carries them; an editable install maps ``reduce._schemas`` onto ``schemas/``.
``[tool.setuptools.packages.find]`` cannot add such a mapped package to the packages
it discovers, hence this file.
"""
from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["reduce*", "cluster*"], exclude=["*.__pycache__"])
    + ["reduce._schemas"],
    package_dir={"reduce._schemas": "schemas"},
)
