"""Lazy attributes of the instrument packages: submodules and public functions imported on first use."""
import importlib


def lazy_getattr(package: str, modules: list, functions: dict):
    """A module ``__getattr__`` for ``package``: ``modules`` are its submodules, ``functions`` maps a
    public name to (module, attribute)."""
    def __getattr__(name):
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        if name in functions:
            module, attr = functions[name]
            return getattr(importlib.import_module(module), attr)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
