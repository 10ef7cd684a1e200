"""One small hierarchy of errors; messages name the file, HDU/variable and what was expected."""


class ReduceError(Exception):
    """Base of every error skyreduce raises on purpose."""


class BadInputError(ReduceError):
    """A level-0 file (or a part of it) that does not meet the ICD.

    ``path`` is the file, ``reason`` the one-line description of what is wrong.
    """

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SchemaError(ReduceError):
    """A dataset or store that violates its schema (names the variable)."""


class CalibrationError(ReduceError):
    """A calibration that cannot be made (missing or unusable reference data)."""


class StoreLockedError(ReduceError):
    """Another process holds the store's write lock."""
