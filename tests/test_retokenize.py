"""Token bytes, re-tokenisation and byte alignment (schemas/token_bytes.py, trainer/retokenize.py).

Tiny tokenizers are trained in the test: two different byte-level BPEs (teacher, student), a
byte-fallback SentencePiece-style BPE (Metaspace "▁", `<0xNN>` pieces), and ones to refuse. The
alignment is checked against an oracle that spells each chunk on both sides."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from fixtures_models import SPECIAL, make_texts
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from schemas.token_bytes import NO_BYTE, PROBES, UnfitTokenizer, check_byte_coverage, token_bytes
from trainer.retokenize import IGNORE_INDEX, Retokenizer, chunk_of, head_partial, stack_pairs, tail_partial

EXTRA = ["Café naïve 中文字 😀 emoji.", "Straße über große Flüsse, ça va. 日本語です", "the end"]


def byte_level(vocab: int, seed: int, normalizer=None, alphabet: bool = True, extra: tuple = ()) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if alphabet else [],
        show_progress=False,
    )
    probes = [] if alphabet else list(PROBES)  # without the alphabet: only the bytes it saw (the probes')
    tok.train_from_iterator(make_texts(150, seed=seed) + EXTRA * 3 + probes + list(extra), trainer=trainer)
    return tok


def sentencepiece(vocab: int, seed: int) -> Tokenizer:
    """Llama-2-like: BPE with byte fallback, Metaspace, every `<0xNN>` piece in the vocabulary."""
    tok = Tokenizer(models.BPE(byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Metaspace(), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(make_texts(150, seed=seed) + EXTRA, trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab_map = spec["model"]["vocab"]
    for b in range(256):
        vocab_map.setdefault(f"<0x{b:02X}>", len(vocab_map))
    return Tokenizer.from_str(json.dumps(spec))


@pytest.fixture(scope="module")
def toks():
    return {
        "teacher": byte_level(420, seed=1),
        "student": byte_level(300, seed=7, extra=("café été résumé " * 30,)),  # merges "é"
        "sp": sentencepiece(330, seed=3),
    }


def pack(tok: Tokenizer, docs: list[str], sep: int, bos: int | None) -> tuple[list[int], list[int]]:
    """The pipeline's stream `[BOS] doc SEP ...` and its document starts (pipelines/packing.py)."""
    stream, starts = [], []
    for d in docs:
        starts.append(len(stream))
        stream += ([bos] if bos is not None else []) + tok.encode(d, add_special_tokens=False).ids + [sep]
    return stream, starts


def ids_of(tok: Tokenizer, name: str) -> int:
    return tok.token_to_id(name)


def spell(tb, ids, symbols: dict[int, bytes], strip_after_symbol: bytes = b"") -> list[bytes]:
    """Per token: its bytes; a control symbol as a marker; the dummy prefix after a symbol removed."""
    out, after = [], True
    for i in ids:
        i = int(i)
        if i in symbols:
            out.append(symbols[i])
            after = True
            continue
        b = tb.table[i]
        if after and strip_after_symbol and b.startswith(strip_after_symbol):
            b = b[len(strip_after_symbol) :]
        out.append(b)
        after = False
    return out


def check_chunks(out, teacher_spell: list[bytes], student_spell: list[bytes]) -> int:
    """Each chunk between consecutive pairs spells the same bytes on both sides; pairs ascend."""
    tp, sp = out.teacher_pos.tolist(), out.student_pos.tolist()
    assert tp == sorted(set(tp)) and sp == sorted(set(sp))
    for c in range(len(tp) - 1):
        t = b"".join(teacher_spell[tp[c] + 1 : tp[c + 1] + 1])
        s = b"".join(student_spell[sp[c] + 1 : sp[c + 1] + 1])
        assert t == s, (c, t, s)
    assert (out.teacher_chunk[tp[0] : tp[-1]] >= 0).all() and (out.teacher_chunk[tp[-1] :] == -1).all()
    assert (out.student_chunk[: sp[0]] == -1).all() and out.student_chunk[sp[1] - 1] == 0
    return len(tp)


# -- token bytes ------------------------------------------------------------------------------------


def test_byte_level_table_spells_every_text(toks):
    tok = toks["teacher"]
    tb = token_bytes(tok.to_str())
    assert tb.kind == "byte_level" and tb.prefix == b""
    for text in EXTRA + [" leading\n\n  spaces\t", "é中😀"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tb.decode(ids) == text.encode("utf-8")
        assert tb.byte_ends(ids)[-1] == len(text.encode("utf-8"))
    eot = ids_of(tok, "<|endoftext|>")
    assert eot in tb.special and tb.table[eot] == b"" and tb.first_byte[eot] == NO_BYTE
    e_acute = ids_of(tok, "Ã")  # byte 0xC3 in GPT-2's alphabet
    assert tb.table[e_acute] == b"\xc3" and tb.first_byte[e_acute] == 0xC3
    check_byte_coverage(tb)


def test_byte_fallback_table_and_dummy_prefix(toks):
    tok = toks["sp"]
    tb = token_bytes(tok.to_str())
    assert tb.kind == "byte_fallback" and tb.prefix == b" " and tb.prefix_if_absent
    assert tb.table[ids_of(tok, "<0x0A>")] == b"\n" and tb.table[ids_of(tok, "<0xE4>")] == b"\xe4"
    ids = tok.encode("the river 中", add_special_tokens=False).ids
    assert tb.decode(ids) == b" the river \xe4\xb8\xad"  # the dummy prefix, recorded as not text
    assert tb.spell("the river 中", ids) == "the river 中".encode()
    check_byte_coverage(tb)


def test_refusals_are_one_line_and_name_the_reason(toks):
    with pytest.raises(UnfitTokenizer, match=r"^normaliser changes 'ﬁ ligature Ⅻ ＡＢＣ' to 'fi ligature XII ABC'$"):
        token_bytes(byte_level(300, seed=1, normalizer=normalizers.NFKC()).to_str())
    with pytest.raises(UnfitTokenizer, match=r"^normaliser changes 'Hello, world.' to 'hello, world.'$"):
        token_bytes(byte_level(300, seed=1, normalizer=normalizers.Lowercase()).to_str())
    word = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(UnfitTokenizer, match=r"^tokenizer model 'WordLevel' is not byte-level or byte-fallback BPE$"):
        token_bytes(word.to_str())
    partial = token_bytes(byte_level(300, seed=1, alphabet=False).to_str())  # only the bytes it saw
    with pytest.raises(UnfitTokenizer, match=r"^student tokenizer cannot encode byte 0x00 \(\d+ of 256 bytes"):
        check_byte_coverage(partial)
    teacher = toks["teacher"]
    with pytest.raises(UnfitTokenizer, match="cannot encode byte 0x00"):
        Retokenizer(teacher.to_str(), byte_level(300, seed=1, alphabet=False).to_str(), 0, None, 32)


def test_utf8_cut_helpers():
    assert head_partial(b"\xa9\xad abc") == 2 and head_partial(b"abc") == 0
    assert tail_partial("ab中".encode()[:-1]) == 2 and tail_partial("ab中".encode()) == 0
    assert tail_partial("a😀".encode()[:-3]) == 1 and tail_partial(b"abc") == 0
    assert chunk_of(np.array([1, 3, 4]), 6).tolist() == [-1, 0, 0, 1, -1, -1]


# -- re-tokenisation and alignment ------------------------------------------------------------------


def test_identical_tokenizers_pair_every_position(toks):
    tok = toks["teacher"]
    sep, bos = ids_of(tok, "<|endoftext|>"), ids_of(tok, "<|im_start|>")
    stream, starts = pack(tok, EXTRA + make_texts(3, seed=9), sep, bos)
    n = len(stream)
    r = Retokenizer(tok.to_str(), tok.to_str(), sep, bos, n + 5)
    out = r(np.array(stream + [sep] * 7), n, starts)
    assert out.n == n and out.ids[:n].tolist() == stream and (out.ids[n:] == sep).all()
    assert out.labels[: n - 1].tolist() == stream[1:] and (out.labels[n - 1 :] == IGNORE_INDEX).all()
    assert out.teacher_pos.tolist() == list(range(n - 1)) == out.student_pos.tolist()
    assert out.teacher_chunk[: n - 2].tolist() == list(range(n - 2)) and (out.teacher_chunk[n - 2 :] == -1).all()
    text_bytes = sum(len((d).encode()) for d in EXTRA + make_texts(3, seed=9))
    assert int(out.label_bytes.sum()) == text_bytes  # separators and BOS are no bytes


def test_different_student_chunks_spell_the_same_text(toks):
    t, s = toks["teacher"], toks["student"]
    sep, bos = ids_of(t, "<|endoftext|>"), ids_of(t, "<|im_start|>")
    docs = EXTRA + make_texts(4, seed=5)
    stream, starts = pack(t, docs, sep, bos)
    r = Retokenizer(t.to_str(), s.to_str(), sep, bos, 400)
    out = r(np.array(stream), len(stream), starts)
    s_sep, s_bos = ids_of(s, "<|endoftext|>"), ids_of(s, "<|im_start|>")
    expect, _ = pack(s, docs, s_sep, s_bos)  # each document encoded on its own, symbols mapped
    assert out.ids[: out.n].tolist() == expect
    symbols_t = {sep: b"<SEP>", bos: b"<BOS>"}
    symbols_s = {s_sep: b"<SEP>", s_bos: b"<BOS>"}
    tbt, tbs = token_bytes(t.to_str()), token_bytes(s.to_str())
    pairs = check_chunks(out, spell(tbt, stream, symbols_t), spell(tbs, out.ids[: out.n], symbols_s))
    assert pairs < out.n - 1  # the tokenizers differ: some student positions have no partner
    # every separator is a boundary on both sides: the positions before it and at it are paired
    for j in np.flatnonzero(np.array(stream) == sep)[:-1]:
        a = np.flatnonzero(out.ids[: out.n] == s_sep)[list(np.flatnonzero(np.array(stream) == sep)).index(j)]
        assert (j - 1, a - 1) in set(zip(out.teacher_pos.tolist(), out.student_pos.tolist()))
        assert (j, a) in set(zip(out.teacher_pos.tolist(), out.student_pos.tolist()))
    assert int(out.label_bytes.sum()) == sum(len(d.encode()) for d in docs)


def test_teacher_token_split_mid_character(toks):
    """Teacher spells "é" as two byte tokens; a student with a merged "é" pairs only around it."""
    t, s = toks["teacher"], toks["student"]
    tbs = token_bytes(s.to_str())
    assert s.encode("é", add_special_tokens=False).ids == [ids_of(s, "Ã©")]  # the student merged it
    sep = ids_of(t, "<|endoftext|>")
    seq = [ids_of(t, c) for c in ("c", "a", "f", "Ã", "©", "Ġ", "o", "k")] + [sep]
    out = Retokenizer(t.to_str(), s.to_str(), sep, None, 32)(np.array(seq), len(seq), [0])
    student = [tbs.table[i] for i in out.ids[: out.n]]
    ends = np.cumsum([len(b) or 1 for b in student])
    assert 4 not in ends  # no student boundary inside the character
    assert 3 not in out.teacher_pos.tolist()  # teacher position 3 (next token "©") is never paired
    assert b"".join(student) == "café ok".encode()


def test_sequence_starting_and_ending_mid_character(toks):
    t, s = toks["teacher"], toks["student"]
    sep = ids_of(t, "<|endoftext|>")
    # "..é is ok" begun before the cut (only "©" of "é" here) and "ok 中" cut after 中's first byte
    body = [ids_of(t, "©")] + t.encode(" is ok ", add_special_tokens=False).ids + [ids_of(t, "ä")]
    out = Retokenizer(t.to_str(), s.to_str(), sep, None, 32)(np.array(body + [sep] * 3), len(body), [])
    tbs = token_bytes(s.to_str())
    assert tbs.decode(out.ids[: out.n]) == b" is ok "  # whole characters only
    assert 0 not in out.teacher_pos.tolist()  # the dropped byte's token is never paired
    tb_t = token_bytes(t.to_str())
    check_chunks(out, spell(tb_t, body, {}), spell(tbs, out.ids[: out.n], {}))
    assert out.teacher_pos.max() < len(body) - 1 and out.student_pos.max() < out.n - 1


def test_documents_never_merge_across_a_separator(toks):
    t, s = toks["teacher"], toks["student"]
    sep = ids_of(t, "<|endoftext|>")
    docs = ["the riv", "er mountain"]  # one student word if the separator were not there
    stream, starts = pack(t, docs, sep, None)
    out = Retokenizer(t.to_str(), s.to_str(), sep, None, 32)(np.array(stream), len(stream), starts)
    s_sep = ids_of(s, "<|endoftext|>")
    want = s.encode(docs[0], add_special_tokens=False).ids + [s_sep]
    want += s.encode(docs[1], add_special_tokens=False).ids + [s_sep]
    assert out.ids[: out.n].tolist() == want


def test_student_truncated_at_its_length(toks):
    t, s = toks["teacher"], toks["student"]
    sep, bos = ids_of(t, "<|endoftext|>"), ids_of(t, "<|im_start|>")
    stream, starts = pack(t, make_texts(4, seed=2, min_words=20), sep, bos)
    full = Retokenizer(t.to_str(), s.to_str(), sep, bos, 1000)(np.array(stream), len(stream), starts)
    out = Retokenizer(t.to_str(), s.to_str(), sep, bos, 12)(np.array(stream), len(stream), starts)
    assert out.n == 12 and out.ids.shape == (12,) and out.ids.tolist() == full.ids[:12].tolist()
    assert out.labels[11] == IGNORE_INDEX and out.labels[:11].tolist() == full.ids[1:12].tolist()
    assert out.student_pos.max() < 11 and out.student_chunk.shape == (12,)
    keep = full.student_pos < 11
    assert out.student_pos.tolist() == full.student_pos[keep].tolist()
    assert out.teacher_pos.tolist() == full.teacher_pos[keep].tolist()


def test_sentencepiece_student_and_teacher(toks):
    t, sp = toks["teacher"], toks["sp"]
    docs = ["Hello wörld 中文 the river.", "1 number two"]
    # byte-level teacher -> SentencePiece student: each piece's dummy prefix is not text
    sep, bos = ids_of(t, "<|endoftext|>"), ids_of(t, "<|im_start|>")
    stream, starts = pack(t, docs, sep, bos)
    out = Retokenizer(t.to_str(), sp.to_str(), sep, bos, 64)(np.array(stream), len(stream), starts)
    s_sep, s_bos = ids_of(sp, "</s>"), ids_of(sp, "<s>")
    assert out.ids[: out.n].tolist() == pack(sp, docs, s_sep, s_bos)[0]
    tbt, tbsp = token_bytes(t.to_str()), token_bytes(sp.to_str())
    sym_t, sym_s = {sep: b"<SEP>", bos: b"<BOS>"}, {s_sep: b"<SEP>", s_bos: b"<BOS>"}
    check_chunks(out, spell(tbt, stream, sym_t), spell(tbsp, out.ids[: out.n], sym_s, b" "))
    assert int(out.label_bytes.sum()) == sum(len(d.encode()) for d in docs)
    # SentencePiece teacher -> byte-level student: the teacher's prefix dropped at document starts
    stream, starts = pack(sp, docs, s_sep, s_bos)
    back = Retokenizer(sp.to_str(), t.to_str(), s_sep, s_bos, 64)  # no BOS name it knows: EOS as BOS
    assert (back.s_sep, back.s_bos) == (sep, sep)
    back = Retokenizer(sp.to_str(), t.to_str(), s_sep, s_bos, 64, student_bos=bos)(
        np.array(stream), len(stream), starts
    )
    assert back.ids[: back.n].tolist() == pack(t, docs, sep, bos)[0]
    check_chunks(back, spell(tbsp, stream, sym_s, b" "), spell(tbt, back.ids[: back.n], sym_t))


def test_bad_samples_are_one_line_errors(toks):
    t, s = toks["teacher"], toks["student"]
    sep = ids_of(t, "<|endoftext|>")
    r = Retokenizer(t.to_str(), s.to_str(), sep, None, 32)
    with pytest.raises(ValueError, match=r"^sample 7: teacher position 1 holds special id \d+, not separator or BOS$"):
        r(np.array([5, ids_of(t, "<|im_end|>"), 6, sep]), 4, [0], where="sample 7")
    with pytest.raises(ValueError, match=r"^sample: n_tokens 9 is outside 1..4$"):
        r(np.array([5, 6, 7, sep]), 9, [0])
    with pytest.raises(ValueError, match="teacher_sep 99999 is outside the teacher's"):
        Retokenizer(t.to_str(), s.to_str(), 99999, None, 32)


def test_deterministic_and_picklable(toks):
    t, s = toks["teacher"], toks["sp"]
    sep, bos = ids_of(t, "<|endoftext|>"), ids_of(t, "<|im_start|>")
    stream, starts = pack(t, EXTRA + make_texts(3, seed=4), sep, bos)
    r = Retokenizer(t.to_str(), s.to_str(), sep, bos, 128)
    a = r(np.array(stream[3:90]), 87, [x - 3 for x in starts if 3 <= x < 90])
    clone = pickle.loads(pickle.dumps(r))
    b = clone(np.array(stream[3:90]), 87, [x - 3 for x in starts if 3 <= x < 90])
    for field in ("ids", "labels", "label_bytes", "teacher_pos", "student_pos", "teacher_chunk", "student_chunk"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    tp, spos = stack_pairs([a, b, a], width=None)
    assert tp.shape == (3, len(a.teacher_pos)) and (tp[1] == a.teacher_pos).all() and (spos[2] == a.student_pos).all()
    short = stack_pairs([a], width=3)[0]
    assert short.tolist() == [a.teacher_pos[:3].tolist()]
    assert (stack_pairs([a], width=len(a.teacher_pos) + 2)[0][0, -2:] == -1).all()
