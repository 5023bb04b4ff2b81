"""Errors the trainer expects: each becomes one line in output/failure and on stderr, no traceback."""


class TrainerError(Exception):
    """A failure the user can fix; its message says what is wrong and what to do."""


class ConfigError(TrainerError):
    """A hyperparameter is unknown or out of range."""


class DataError(TrainerError):
    """A channel is missing, empty or holds an unreadable sample."""
