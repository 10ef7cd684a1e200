"""The YAML schemas, installed as the data package ``reduce._schemas`` (see setup.py).

This folder is their one home in the repository; ``reduce.schemas`` reads them with
``importlib.resources``. This file only makes the folder an importable package (needed
for an editable install to map ``reduce._schemas`` onto it).
"""
