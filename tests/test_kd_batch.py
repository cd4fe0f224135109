"""One teacher record from truncation to the loss: `schemas.KeptEntries` (padding, dense layout)
and `trainer.teacher_batch.TeacherBatch`, which the collator and the live teacher both build."""

import numpy as np
import pytest
import torch

from schemas import ExactCodec, KeptEntries, SchemaError, build_sample, decode_sample, truncate, truncate_tensor
from schemas.codec import lossless_decoded
from trainer.data import DistillCollator
from trainer.losses import LossSpec, distill_loss
from trainer.teacher_batch import TeacherBatch

V, K, SEQ = 32, 5, 8


def logits_for(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, V)) * 3).astype(np.float32)


def test_padding_is_defined_once_and_undone_by_head():
    tr = truncate(logits_for(5, 0), top_p=0.9, top_k=K)
    padded = tr.padded(SEQ)
    assert padded.counts.tolist() == tr.counts.tolist() + [0, 0, 0]
    assert padded.log_tail[5:].tolist() == [-np.inf] * 3 and padded.ids is tr.ids
    assert tr.padded(5) is tr
    back = padded.head(5)
    for name in ("counts", "ids", "logp", "log_tail"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tr, name))
    # head in the middle of real positions cuts the flat arrays at the position boundary
    two = tr.head(2)
    assert two.ids.shape[0] == int(tr.counts[:2].sum()) and two.num_positions == 2
    with pytest.raises(SchemaError, match="5 positions does not fit a sequence of 3"):
        tr.padded(3)
    empty = KeptEntries.empty(0).padded(4)
    assert empty.counts.tolist() == [0] * 4 and empty.ids.size == 0


def test_to_dense_lays_entries_out_in_stored_order_with_a_mask():
    tr = KeptEntries(
        np.array([2, 0, 1]),
        np.array([7, 3, 9]),
        np.log(np.array([0.6, 0.4, 1.0], np.float32)),
        np.array([-1.0, -np.inf, -np.inf], np.float32),
    )
    d = tr.to_dense(3)
    assert d.ids.tolist() == [[7, 3, 0], [0, 0, 0], [9, 0, 0]]
    assert d.mask.tolist() == [[True, True, False], [False] * 3, [True, False, False]]
    assert np.isneginf(d.logp[~d.mask]).all() and d.logp[0, 0] == tr.logp[0]
    assert d.log_tail.tolist() == [-1.0, -np.inf, -np.inf]
    with pytest.raises(SchemaError, match="more than K=1"):
        tr.to_dense(1)


def _live_model(teacher):
    from trainer.config import DistillConfig
    from trainer.model import DistillationModel

    live = DistillConfig(
        mode="live", teacher="(loaded)", support="full", tau=1.0, chunk_size=None, top_p=0.9, top_k=K, fused_head=False
    )  # the stand-in student has no decoder / output projection
    return DistillationModel(torch.nn.Linear(1, 1), live, teacher, alpha=0.5)


def _tiny_teacher():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=V,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=SEQ,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # sharper distributions: top-p keeps a few entries, not all K
    return model


def test_collator_and_live_teacher_build_the_same_teacher_batch():
    """The offline path (truncate, pad, encode, decode, collate) and the live path (truncate in the
    training step) give the same TeacherBatch for the same teacher and tokens."""
    teacher = _tiny_teacher()
    tokens = torch.randint(0, V, (3, SEQ), generator=torch.Generator().manual_seed(1))
    n_tokens = [SEQ, 5, 0]  # a full sequence, a padded one, an empty one
    attention = torch.tensor([[1] * n + [0] * (SEQ - n) for n in n_tokens])
    batch = {"input_ids": tokens, "attention_mask": attention}
    with torch.no_grad():
        logits = teacher(input_ids=tokens, attention_mask=attention).logits
    codec, samples = ExactCodec(), []
    for i, n in enumerate(n_tokens):
        tr = truncate_tensor(logits[i, :n], 0.9, K) if n else KeptEntries.empty(0)
        raw = build_sample(
            sample_id=i,
            tokens=tokens[i].numpy(),
            n_tokens=n,
            doc_starts=np.array([0]),
            truncated=tr.padded(SEQ),
            codec=codec,
            vocab_size=V,
            top_k=K,
            unit="u",
        )
        samples.append(
            {"tokens": tokens[i].numpy(), "n_tokens": n, "sample_id": i, "teacher": decode_sample(raw, codec)}
        )  # a DistillDataset item
    offline = TeacherBatch.from_batch(DistillCollator(top_k=K)(samples))
    live = _live_model(teacher).live_teacher_signal(batch)
    assert int(live.mask.sum(-1)[live.position_mask].min()) < K  # top-p cut somewhere before K
    for name in ("ids", "mask", "position_mask"):
        assert torch.equal(getattr(offline, name), getattr(live, name)), name
    torch.testing.assert_close(offline.logp, live.logp, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(offline.log_tail, live.log_tail)
    assert live.position_mask[1].tolist() == [True] * 5 + [False] * 3 and not live.position_mask[2].any()


def test_teacher_batch_columns_round_trip_and_errors():
    tr = lossless_decoded(truncate(logits_for(SEQ, 3), 0.9, K))
    tb = TeacherBatch.from_kept([tr, tr], SEQ, K, np.ones((2, SEQ), bool))
    back = TeacherBatch.from_batch({"labels": None, **tb.columns()})
    fields = ("ids", "logp", "mask", "log_tail", "position_mask")
    assert all(torch.equal(getattr(back, f), getattr(tb, f)) for f in fields)
    with pytest.raises(ValueError, match="no teacher signal .*teacher_logp"):
        TeacherBatch.from_batch({"teacher_ids": tb.ids})
    logits = torch.zeros(2, SEQ, V)
    spec = LossSpec(kind="forward_kl", tau=2.0)
    labels = torch.zeros(2, SEQ, dtype=torch.int64)
    short = TeacherBatch(tb.ids, tb.logp, tb.mask, tb.log_tail[:, :4], tb.position_mask)
    with pytest.raises(ValueError, match=r"teacher_log_tail must have shape \(2, 8\)"):
        distill_loss(logits, labels, short, spec, alpha=0.5)
    with pytest.raises(ValueError, match="alpha is 0.5 but no teacher signal"):
        distill_loss(logits, labels, None, spec, alpha=0.5)
    # alpha = 0: the teacher is not read at all (LM only)
    assert distill_loss(logits, labels, None, spec, alpha=0.0).kd.item() == 0.0


@pytest.mark.parametrize(
    "setting,value", [("kind", "kld"), ("support", "renorm"), ("tau", float("inf")), ("chunk_size", 0)]
)
def test_loss_spec_names_the_bad_setting(setting, value):
    with pytest.raises(ValueError, match=f"^{setting} must be"):
        LossSpec(**{setting: value})
    with pytest.raises(ValueError, match="tail=True .* only applies to support 'full'"):
        LossSpec(support="split", tail=True)


def test_an_offline_step_builds_the_batchs_teacher_once(monkeypatch):
    """Issue 22: the teacher goes codec -> KeptEntries -> TeacherBatch (collator) -> columns, and the
    step reads the columns back into a TeacherBatch once (counting KD positions reads them directly)."""

    from trainer.config import DistillConfig
    from trainer.model import DistillationModel

    student = _tiny_teacher()  # any small Llama with a plain head will do as the student
    kept = [lossless_decoded(truncate(logits_for(n, i), 0.9, K)) for i, n in enumerate((SEQ, 5))]
    samples = [
        {"tokens": np.arange(SEQ, dtype=np.int64) % V, "n_tokens": n, "sample_id": i, "teacher": e}
        for i, (n, e) in enumerate(zip((SEQ, 5), kept))
    ]
    batch = DistillCollator(top_k=K)(samples)
    built = []
    real = TeacherBatch.from_batch.__func__
    monkeypatch.setattr(TeacherBatch, "from_batch", classmethod(lambda cls, b: built.append(1) or real(cls, b)))
    model = DistillationModel(student, DistillConfig(mode="offline", support="split", tau=2.0), alpha=0.5)
    model.record_batch_counts(batch)
    out = model.loss(model(batch), batch)
    out["total"].backward()
    assert len(built) == 1
    assert float(model._batch_counts[1]) == SEQ + 5  # every real position keeps >= 1 entry
    with pytest.raises(ValueError, match="top_k >= 1"):
        DistillCollator(top_k=0)
