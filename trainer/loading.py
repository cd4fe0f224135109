"""Loading the models a run trains with: the student (from a checkpoint or an HF config, checked to
run a forward pass), its tokenizer, and in live mode the frozen teacher (checked to share the
student's tokenizer) -- each refusal names the setting it came from."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from schemas import fingerprint_tokenizer, storage
from schemas.errors import IncompatibleDataset
from trainer.config import TrainConfig
from trainer.errors import SettingError


def fetch_model_dir(key: str, uri: str, cache_root: str | None) -> str:
    """A model/tokenizer folder (downloaded when remote); a missing one is the setting's fault."""
    try:
        with storage.access(f"{key} {uri}"):
            return storage.fetch_dir(uri, cache_root)
    except FileNotFoundError as e:
        raise SettingError(f"{key}: {e}") from None


def load_tokenizer(cfg: TrainConfig, cache_root: str | None):
    """The student's tokenizer: model.tokenizer, else the one stored with model.checkpoint."""
    for key, uri in (("model.tokenizer", cfg.model.tokenizer), ("model.checkpoint", cfg.model.checkpoint)):
        if not uri:
            continue
        path = fetch_model_dir(key, uri, cache_root)
        try:
            return AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:
            if key == "model.tokenizer":
                raise SettingError(f"model.tokenizer: cannot load a tokenizer from {uri} ({e})") from None
    if cfg.distill.cross_tokenizer is not None:
        raise SettingError(
            "model.tokenizer: required with distill.cross_tokenizer: the student's own tokenizer dir/URI "
            "(`pdistill tokenizer train` makes one from the lake); model.checkpoint holds no tokenizer"
        )
    raise SettingError(
        "model.tokenizer: required (the teacher's tokenizer dir/URI) so that the dataset's tokenizer "
        "fingerprint can be checked; model.checkpoint holds no tokenizer"
    )


def build_student(cfg: TrainConfig, cache_root: str | None):
    if cfg.model.hf_config is not None:
        raw = dict(cfg.model.hf_config)
        model_type = raw.pop("model_type")
        try:
            hf_cfg = AutoConfig.for_model(model_type, **raw)
            student = AutoModelForCausalLM.from_config(hf_cfg)
        except (ValueError, TypeError, KeyError, ArithmeticError) as e:  # e.g. hidden_size 0: ZeroDivisionError
            raise SettingError(f"model.hf_config: {e}") from None
        check_student_runs("model.hf_config", student)
        return student
    path = fetch_model_dir("model.checkpoint", cfg.model.checkpoint, cache_root)
    try:
        student = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise SettingError(f"model.checkpoint: cannot load a causal LM from {cfg.model.checkpoint} ({e})") from None
    check_student_runs("model.checkpoint", student)
    return student


def check_student_runs(key: str, student) -> None:
    """One forward of two tokens, in eval mode (no dropout: the RNG is not touched) and without
    gradients, before any data is read: a config that builds but cannot run (e.g. attention heads
    that key/value heads do not divide) is the setting's fault, not a traceback at step 1."""
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            student(input_ids=torch.zeros(1, 2, dtype=torch.long))
    except (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError) as e:
        raise SettingError(
            f"{key}: the student it describes cannot run a forward pass ({type(e).__name__}: "
            f"{' '.join(str(e).split())})"
        ) from None
    finally:
        student.train(was_training)


def build_teacher(cfg: TrainConfig, cache_root: str | None, student_fp: str):
    """Live mode: the frozen teacher, checked to share the student's tokenizer when it ships one."""
    path = fetch_model_dir("distill.teacher", cfg.distill.teacher, cache_root)
    try:
        teacher = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise SettingError(f"distill.teacher: cannot load a causal LM from {cfg.distill.teacher} ({e})") from None
    try:
        ttok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        ttok = None
    if ttok is not None and fingerprint_tokenizer(ttok) != student_fp:
        raise IncompatibleDataset(
            f"distill.teacher: the teacher's tokenizer at {cfg.distill.teacher} differs from the student's "
            f"({fingerprint_tokenizer(ttok)} vs {student_fp})"
        )
    return teacher
