"""The student's output head, for the fused loss (`distill.fused_head`): the student without its
projection (`student_decoder`), the check that its logits really are last hidden state x a plain
linear projection (`check_plain_head`: anything else would make the fused loss compute another
loss, so it is refused before step 1), and the held-out metrics fed loss sums instead of logits.
"""

from __future__ import annotations

import torch
from composer.metrics import LanguageCrossEntropy, LanguagePerplexity

from trainer.errors import SettingError

# config attributes of Hugging Face students whose logits are not hidden @ W^T + b
_HEAD_ATTRIBUTES = (
    ("final_logit_softcapping", None),  # Gemma 2: tanh soft-capping
    ("logit_softcapping", None),
    ("logit_scale", 1.0),  # Cohere: logits * logit_scale
    ("logits_scaling", 1.0),  # Granite: logits / logits_scaling
)


class FromLossSums:
    """A Composer language metric that also takes the fused head's {"lm_sum", "tokens"} (`eval_forward`)
    in place of logits: the same states (summed cross-entropy, token count), no [B, T, V] tensor."""

    def update(self, output, target) -> None:
        if isinstance(output, dict) and "lm_sum" in output:
            self.sum_loss += output["lm_sum"].to(self.sum_loss)
            self.total_items += output["tokens"].to(self.total_items)
            return
        super().update(output, target)


class HeldOutCrossEntropy(FromLossSums, LanguageCrossEntropy):
    pass


class HeldOutPerplexity(FromLossSums, LanguagePerplexity):
    pass


def last_hidden(out) -> torch.Tensor:
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def student_decoder(student: torch.nn.Module) -> torch.nn.Module | None:
    """The student without its output projection: a Hugging Face model's `base_model` (LlamaModel
    for LlamaForCausalLM), else its `get_decoder()`; None when neither is a proper submodule."""
    base = getattr(student, "base_model", None)
    if isinstance(base, torch.nn.Module) and base is not student:
        return base
    get = getattr(student, "get_decoder", None)
    decoder = get() if callable(get) else None
    return decoder if isinstance(decoder, torch.nn.Module) and decoder is not student else None


def is_sharded(weight: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor  # noqa: PLC0415 (late: optional dependency)
    except ImportError:  # pragma: no cover - torch without distributed
        DTensor = ()
    return isinstance(weight, DTensor) or weight.dim() != 2 or weight.numel() == 0


def check_plain_head(student: torch.nn.Module) -> None:
    """Refuse (SettingError naming the attribute) a student whose logits are not its decoder's last
    hidden state times its output projection: the fused head would compute another loss. Checked on
    the config's known attributes, the head's type, then numerically on a 4-token probe."""
    fix = "; set distill.fused_head: false to train on the student's own logits"
    if student_decoder(student) is None:
        raise SettingError(
            f"distill.fused_head: the student ({type(student).__name__}) has no base_model or "
            f"get_decoder() (the fused head needs its last hidden state){fix}"
        )
    if not callable(getattr(student, "get_output_embeddings", None)):
        raise SettingError(
            f"distill.fused_head: the student ({type(student).__name__}) has no "
            f"get_output_embeddings() (the fused head needs its output projection){fix}"
        )
    config = getattr(student, "config", None)
    for attr, neutral in _HEAD_ATTRIBUTES:
        value = getattr(config, attr, None)
        if value is not None and value != neutral:
            raise SettingError(
                f"distill.fused_head: the student's config sets {attr}={value!r}, so its logits are "
                f"not a plain linear projection of the last hidden state{fix}"
            )
    head = student.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        raise SettingError(
            f"distill.fused_head: the student's get_output_embeddings() is "
            f"{type(head).__name__}, not a plain torch.nn.Linear{fix}"
        )
    p = next(student.parameters(), None)
    if p is None or p.device.type == "meta":
        return
    v = head.weight.shape[0]
    ids = (torch.arange(4, device=p.device) * 7919 % v)[None]
    attention = torch.ones_like(ids)
    training = student.training
    try:
        student.eval()
        with torch.no_grad():
            logits = student(input_ids=ids, attention_mask=attention).logits.float()
            hidden = last_hidden(student_decoder(student)(input_ids=ids, attention_mask=attention))
            fused = head(hidden).float() if hidden.shape[-1] == head.in_features else None
    finally:
        student.train(training)
    if (
        fused is None
        or logits.shape != fused.shape
        or not torch.allclose(logits, fused, rtol=1e-4, atol=1e-4 * float(fused.abs().max()) + 1e-6)
    ):
        raise SettingError(
            f"distill.fused_head: the student's logits ({type(student).__name__}) are not "
            f"get_output_embeddings() applied to its base model's last hidden state (checked on a "
            f"probe input){fix}"
        )
