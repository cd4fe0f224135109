"""Shared pytest fixtures. The object-store emulators live in tests/objectstore.py."""

import os  # noqa: E402

import pytest  # noqa: E402
from fixtures_models import tiny_teacher  # noqa: F401,E402  (fixture: tiny Llama + BPE tokenizer folder)
from hypothesis import settings  # noqa: E402
from objectstore import gcs_bucket, gcs_server, s3_bucket, s3_server  # noqa: F401  (fixtures)

# Property tests: `make test` (what CI runs) selects the derandomised "ci" profile (so does CI=true),
# so a failure reproduces on every run and a lucky draw never blocks a merge; a plain `pytest` uses
# the "dev" profile, new random examples on each run (failures print a blob to replay them).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def real_teacher(tmp_path_factory):
    """SmolLM2-135M imported once per test session: (checkpoint dir, import record).

    The import (dequantising the GGUF) costs about a minute on 2 cores; the import test and the
    demo test share it. Skips with the install hint when the teacher package is missing.
    """
    from pdistill import teacher

    try:
        teacher.locate_gguf()
    except teacher.TeacherImportError as e:
        pytest.skip(str(e))
    out = tmp_path_factory.mktemp("real-teacher") / "teacher"
    return out, teacher.import_gguf(out, log=lambda *a: None)
