"""What a user can get wrong, as exception types: the CLI prints them as one line, exit status 2.

Only these (and the data-contract errors, `schemas.errors.SchemaError`, which cover refused,
incomplete and corrupt datasets) become messages; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from schemas.errors import ConfigError, SchemaError


class SettingError(ConfigError):
    """A well-formed setting that cannot be used here (a folder that cannot be written, no GPU,
    a checkpoint or tokenizer that is not there). The message starts with the dotted key."""


class ResumeMismatch(ConfigError):
    """Autoresume found a checkpoint made with other settings; the message lists the changed keys."""


USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, SchemaError)
