"""The three kinds of user error. Each message names the key, file or row and how to fix it; the scripts print
it and exit with status 2 before any heavy work. Lowest layer: every module may raise these."""


class ConfigError(ValueError):
    """A config problem; the message names the key and says how to fix it."""


class DataError(ValueError):
    """A data problem; the message names the file, the column and the row."""


class PromptError(ValueError):
    """A prompt file problem; the message names the file and the placeholder."""
