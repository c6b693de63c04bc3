"""Errors a user can act on, at the bottom of the data path so that every stage can raise them.

>>> issubclass(ConfigError, ValueError)
True
"""


class ConfigError(ValueError):
    """A config value is invalid; the message names the field."""
