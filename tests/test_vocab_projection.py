"""Method first_token: the teacher's kept ids moved onto the student's vocabulary (`trainer.vocab_projection`)."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.kept import KeptEntries
from schemas.token_bytes import token_bytes
from trainer.vocab_projection import first_token_map, project_kept


def _bpe(texts, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainer=trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return tok


TEXTS = ["the mountain river runs to the ocean", "mountains and rivers, café, 中文 😀"] * 50


def test_each_teacher_id_maps_to_a_student_token_its_bytes_begin_with():
    teacher, student = _bpe(TEXTS, 400), _bpe(TEXTS, 280)
    tb, sb = token_bytes(teacher.to_str()), token_bytes(student.to_str())
    first = first_token_map(tb, sb, student, {0: 0})
    assert first[0] == 0  # the separator maps to the student's
    for t, s in enumerate(first):
        if tb.table[t]:
            assert s >= 0 and tb.table[t].startswith(sb.table[s]), (t, tb.table[t], s)
    long = [t for t, b in enumerate(tb.table) if len(b) > 4 and first[t] >= 0]
    assert any(len(sb.table[first[t]]) > 1 for t in long)  # not a byte fallback everywhere


def test_identical_tokenizers_map_every_id_to_itself():
    tok = _bpe(TEXTS, 400)
    tb = token_bytes(tok.to_str())
    first = first_token_map(tb, tb, tok, {0: 0})
    with_bytes = [t for t, b in enumerate(tb.table) if b]
    assert np.array_equal(first[with_bytes], with_bytes) and first[0] == 0


def _kept(counts, ids, probs, tails):
    logp = np.log(np.concatenate([np.asarray(p, np.float64) / np.sum(p) for p in probs]))
    return KeptEntries(
        np.asarray(counts, np.int64),
        np.asarray(ids, np.int64),
        logp.astype(np.float32),
        np.log(np.asarray(tails, np.float64)).astype(np.float32),
    )


def test_projection_merges_ids_moves_lost_mass_to_the_tail_and_places_entries_at_the_pair():
    # teacher positions 0..2; ids 5 and 6 both begin with student id 2, id 7 maps nowhere
    kept = _kept([2, 3, 1], [1, 5, 5, 6, 7, 3], [[0.5, 0.5], [0.4, 0.4, 0.2], [1.0]], [0.1, 0.2, 0.0001])
    first = np.array([-1, 1, -1, 3, -1, 2, 2, -1])
    out = project_kept(kept, first, teacher_pos=np.array([1, 2]), student_pos=np.array([0, 3]), student_len=5)
    assert out.counts.tolist() == [1, 0, 0, 1, 0]
    assert out.ids.tolist() == [2, 3]
    np.testing.assert_allclose(np.exp(out.logp), [1.0, 1.0], rtol=1e-6)  # 0.4 + 0.4 renormalised over 0.8
    t = 0.2 + (1 - 0.2) * 0.2  # the teacher's tail plus the kept mass that maps nowhere
    np.testing.assert_allclose(np.exp(out.log_tail[[0, 3]]), [t, 0.0001], rtol=1e-5)
    assert np.isneginf(out.log_tail[[1, 2, 4]]).all()


@pytest.mark.parametrize("seed", range(5))
def test_the_identity_projection_is_the_teacher_itself(seed):
    rng = np.random.default_rng(seed)
    n, v = 12, 30
    counts = rng.integers(1, 6, n)
    ids = np.concatenate([np.sort(rng.choice(v, c, replace=False)) for c in counts])
    probs = [rng.dirichlet(np.ones(c)) for c in counts]
    kept = _kept(counts, ids, probs, rng.uniform(0.01, 0.5, n))
    pos = np.arange(n)
    out = project_kept(kept, np.arange(v), pos, pos, n)
    assert np.array_equal(out.counts, kept.counts) and np.array_equal(out.ids, kept.ids)
    np.testing.assert_allclose(out.logp, kept.logp, atol=1e-6)
    np.testing.assert_allclose(out.log_tail, kept.log_tail, atol=1e-6)
