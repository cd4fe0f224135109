"""What a user of `pdistill logits` / `pdistill plan` can get wrong, as exception types.

The CLIs print these as one line with exit status 2; anything else is a bug in our code and keeps
its traceback. The types live beside the code that raises them (none of it imports Beam or torch)."""

from __future__ import annotations

import logging
import re

from pipelines.output import OutputError
from pipelines.sources import InputError
from pipelines.teacher_checkpoint import TeacherError
from schemas.errors import ConfigError, SchemaError


def user_errors() -> tuple[type[Exception], ...]:
    return (ConfigError, SchemaError, InputError, TeacherError, OutputError)


class _QuietUserErrors:
    """A logging filter: drops the record Beam logs (with its traceback) of an exception it then
    re-raises (`apache_beam.runners.common`, `_reraise_augmented`) when that exception is one of
    ours the CLI prints as one line (a `PartMismatch` in the final step); a bug keeps its log."""

    def filter(self, record) -> bool:
        errors = user_errors()
        raised = record.exc_info[1] if record.exc_info else None
        return not (isinstance(record.msg, errors) or isinstance(raised, errors))


def quiet_user_errors_in_beam_logs() -> None:
    """Install `_QuietUserErrors` on the logger Beam uses for a failed element (in this process)."""
    logger = logging.getLogger("apache_beam.runners.common")
    if not any(isinstance(f, _QuietUserErrors) for f in logger.filters):
        logger.addFilter(_QuietUserErrors())


def without_step(message: str) -> str:
    """A user error's message without the " [while running 'Step']" Beam appends when it re-raises it."""

    return re.sub(r" \[while running '[^']*'\]$", "", message)
