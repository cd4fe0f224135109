"""What a user of `pdistill logits` / `pdistill plan` can get wrong, as exception types.

The CLIs print these as one line with exit status 2; anything else is a bug in our code and keeps
its traceback. Imported lazily (the types live beside the code that raises them, some of which
imports Beam and torch)."""
from __future__ import annotations


def user_errors() -> tuple[type[Exception], ...]:
    from pipelines.output import OutputError
    from pipelines.sources import InputError
    from pipelines.teacher import TeacherError
    from schemas.errors import ConfigError, SchemaError

    return (ConfigError, SchemaError, InputError, TeacherError, OutputError)
