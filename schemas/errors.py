"""Errors of the data contract; each message names the field, setting or record at fault."""


class SchemaError(ValueError):
    """Base class of every data-contract error."""


class CodecError(SchemaError):
    """Bad truncation/codec input or settings (non-finite logits, k > vocab, p outside (0, 1])."""


class ManifestError(SchemaError):
    """A manifest that is missing, of an unknown version, or with a missing/ill-typed field."""


class IncompatibleDataset(SchemaError):
    """A dataset that does not match the student/teacher it is paired with."""


class IncompleteDataset(IncompatibleDataset):
    """A dataset without its root index or manifest (still being written, or its job failed)."""


class CorruptDataset(SchemaError):
    """A shard whose bytes do not match the hash recorded in the index."""


class ConfigError(ValueError):
    """A bad setting, from a file, a flag or an override; the message names the setting.

    The one configuration error of the product: the trainer's and the pipeline's settings, the
    runner options and the CLIs all raise (subclasses of) this type, and every CLI prints it as
    one line with exit status 2."""


def zstd_errors() -> tuple[type[Exception], ...]:
    """The `zstd` binding's error type (streaming decompresses shards with it), where installed:
    what a damaged compressed shard raises when it is read."""
    try:
        import zstd  # noqa: PLC0415 (late: optional dependency)
    except ImportError:
        return ()
    return (zstd.Error,)
