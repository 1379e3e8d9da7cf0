"""User-facing errors: the CLI prints them as one line and exits non-zero, never a traceback."""


class SafealignError(Exception):
    """An error caused by the user's input (a path, a config value, a data row).

    The message must stand alone on one line: name the file, the line and the field where there is one.
    """


class ConfigError(SafealignError):
    pass


class DataError(SafealignError):
    pass
