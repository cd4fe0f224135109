"""The launcher's checks on a teacher checkpoint, before anything is scheduled: it must be a
readable Hugging Face model folder whose weights fit its config.json, whose output vocabulary
covers the tokenizer (`inspect_teacher`), and a --tokenizer other than its own must spell the
teacher's ids the same way (`check_tokenizer_fits`). The revision (a hash over config.json and the
weights) can be computed in the background while other checks run (`prefetch_revision`)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from safetensors import safe_open

from pipelines.teacher_limits import ForwardShape, forward_shape
from schemas import storage
from schemas.identity import fingerprint_files

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class TeacherError(ValueError):
    """The teacher checkpoint cannot be used (unreadable, or its vocabulary misses tokenizer ids)."""


@dataclass(frozen=True)
class TeacherInfo:
    local_dir: str
    vocab_size: int  # logits dimension
    revision: str  # sha256 over config.json and the weight files
    shape: ForwardShape | None = None  # what sizes a forward (pipelines.teacher_limits)
    params: int = 0  # parameter count (from the safetensors headers; a lower bound for other formats)


def _weight_files(local_dir: str) -> list[str]:
    return sorted(n for n in os.listdir(local_dir) if n.endswith(WEIGHT_SUFFIXES))


def teacher_revision(local_dir: str) -> str:
    return fingerprint_files(
        (name.encode() + b"\x00", os.path.join(local_dir, name)) for name in ["config.json"] + _weight_files(local_dir)
    )


def logits_dim(config) -> int:
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    v = getattr(cfg, "vocab_size", None)
    if not isinstance(v, int) or v < 1:
        raise TeacherError(f"teacher config has no vocab_size ({type(config).__name__})")
    return v


def check_vocab(teacher_vocab: int, tokenizer_len: int, teacher: str, tokenizer: str) -> None:
    if teacher_vocab < tokenizer_len:
        raise TeacherError(
            f"teacher {teacher} produces logits over {teacher_vocab} ids but tokenizer {tokenizer} has "
            f"{tokenizer_len} tokens: the teacher cannot score every token; use the teacher's own tokenizer"
        )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_tokenizer_fits(
    teacher: TeacherInfo, tokenizer, teacher_uri: str, tokenizer_uri: str, own_checked: bool
) -> None:
    """The tokenizer that encodes the corpus must speak the teacher's vocabulary, or the teacher
    scores ids that mean other tokens to it and nothing says so. Refused: an id the tokenizer can
    produce beyond the teacher's logits; and, when `own_checked` (a --tokenizer other than the
    teacher's URI) and the checkpoint ships its own tokenizer, any id the two tokenizers both
    have but spell differently. Not refused: logits padded beyond the tokenizer (usual), a
    tokenizer copied elsewhere, or one that only adds or lacks tokens at ids the other lacks."""
    vocab = tokenizer.get_vocab()
    check_vocab(
        teacher.vocab_size, max(len(tokenizer), max(vocab.values(), default=-1) + 1), teacher_uri, tokenizer_uri
    )
    if not own_checked or not any(os.path.isfile(os.path.join(teacher.local_dir, n)) for n in TOKENIZER_FILES):
        return
    from transformers import AutoTokenizer  # noqa: PLC0415 (late: torch is heavy)

    try:
        own = AutoTokenizer.from_pretrained(teacher.local_dir).get_vocab()
    except Exception:  # tokenizer files transformers cannot load: nothing to compare with
        return
    token_of = {i: t for t, i in own.items()}
    for token, i in sorted(vocab.items(), key=lambda item: item[1]):
        if token_of.get(i, token) != token:
            raise TeacherError(
                f"tokenizer {tokenizer_uri} is not the tokenizer of teacher {teacher_uri}: id {i} is {token!r} in "
                f"it but {token_of[i]!r} in the tokenizer saved with the teacher, so the teacher would score "
                "another vocabulary; use the teacher's own tokenizer (leave --tokenizer unset)"
            )


def _first_line(e: Exception) -> str:
    """transformers' errors run to many lines (a list of 300 model types, upgrade advice): the first."""
    return (str(e).strip().splitlines() or [""])[0][:300]


def check_weight_shapes(uri: str, config, shapes: dict) -> None:
    """The safetensors headers against the model config.json describes (built on the meta device:
    no memory, no weights read), so weights from another model fail here with the tensor named,
    not as a `size mismatch` deep inside the first worker's model load."""
    if not shapes:
        return  # only .bin/.pt weights: their shapes are known once loaded
    import torch  # noqa: PLC0415 (late: torch is heavy)
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 (late: torch is heavy)

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as e:
        raise TeacherError(
            f"teacher {uri}: config.json does not describe a causal LM transformers can build "
            f"({type(e).__name__}: {_first_line(e)})"
        ) from None
    prefix = f"{getattr(model, 'base_model_prefix', '') or '-'}."  # checkpoints of the bare base model lack it

    def bare(k: str) -> str:
        return k[len(prefix) :] if k.startswith(prefix) else k

    expected = {bare(k): tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = {bare(k): v for k, v in shapes.items()}
    common = [k for k in shapes if k in expected]
    if not common:
        raise TeacherError(
            f"teacher {uri}: none of the {len(shapes)} tensors in its weight files is a parameter of "
            f"the {type(model).__name__} its config.json describes (e.g. {next(iter(shapes))!r}): "
            "weights and config.json are from different models"
        )
    for k in common:
        if shapes[k][0] != expected[k]:
            raise TeacherError(
                f"teacher {uri}: tensor {k} in {shapes[k][1]} has shape {list(shapes[k][0])} but "
                f"config.json makes it {list(expected[k])}: weights and config.json are from "
                "different models"
            )


def prefetch_revision(uri: str):
    """Start fetching the checkpoint and hashing its weights (a sha256 over hundreds of MB) in a
    background thread, so the launcher's other checks overlap it; hand the future to
    `inspect_teacher`. Errors are left for `inspect_teacher` to report in order."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdistill-revision")

    def fetch_and_hash():
        local = storage.fetch_dir(uri)
        return local, teacher_revision(local)

    future = pool.submit(fetch_and_hash)
    pool.shutdown(wait=False)
    return future


def inspect_teacher(uri: str, tokenizer_len: int, tokenizer_uri: str, revision=None) -> TeacherInfo:
    """Fail fast (before any work) on an unreadable checkpoint or a vocabulary mismatch.
    `revision`: a future from `prefetch_revision(uri)`, else the hash is computed here."""
    from transformers import AutoConfig  # noqa: PLC0415 (late: torch is heavy)

    rev = None
    if revision is not None:  # wait for the prefetch: two concurrent fetch_dir downloads would collide
        try:
            local, rev = revision.result()
        except Exception:
            pass  # reported below, by the same calls, in order
    try:
        local = storage.fetch_dir(uri)
    except Exception as e:
        raise TeacherError(f"teacher {uri}: cannot read the checkpoint ({type(e).__name__}: {e})") from None
    if not os.path.isfile(os.path.join(local, "config.json")):
        raise TeacherError(
            f"teacher {uri}: no config.json in the checkpoint (a teacher is a Hugging Face model folder: "
            "config.json and weight files)"
        )
    try:
        config = AutoConfig.from_pretrained(local)
    except Exception as e:
        raise TeacherError(
            f"teacher {uri}: cannot read its config.json ({type(e).__name__}: {_first_line(e)})"
        ) from None
    weights = _weight_files(local)
    if not weights:
        raise TeacherError(f"teacher {uri}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) in the checkpoint")
    params, shapes = 0, {}
    for name in weights:
        if name.endswith(".safetensors"):
            try:
                with safe_open(os.path.join(local, name), framework="numpy") as f:
                    for k in f.keys():
                        shapes[k] = (tuple(f.get_slice(k).get_shape()), name)
            except Exception as e:
                raise TeacherError(
                    f"teacher {uri}: weight file {name} is unreadable ({type(e).__name__}: {e})"
                ) from None
        else:
            params += os.path.getsize(os.path.join(local, name)) // 4
    params += sum(int(np.prod(shape)) for shape, _ in shapes.values())
    check_weight_shapes(uri, config, shapes)
    vocab = logits_dim(config)
    check_vocab(vocab, tokenizer_len, uri, tokenizer_uri)
    return TeacherInfo(local, vocab, rev or teacher_revision(local), forward_shape(config, vocab), params)
