"""Shared pytest fixtures. The object-store emulators live in tests/objectstore.py."""
from objectstore import gcs_bucket, gcs_server, s3_bucket, s3_server  # noqa: F401  (fixtures)
from fixtures_models import tiny_teacher  # noqa: F401,E402  (fixture: tiny Llama + BPE tokenizer folder)
