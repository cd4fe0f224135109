"""Tiny, offline, deterministic Hugging Face models and tokenizers for tests (pipeline and trainer).

`build_tokenizer(dir)`   a real byte-level BPE `PreTrainedTokenizerFast` trained on a few strings;
                         like SmolLM2 it prepends BOS `<|im_start|>` when asked for special
                         tokens, and `<|endoftext|>` (id 0) is its EOS.
`build_tiny_llama(dir, vocab_size)`  a random 2-layer Llama (hidden 32) saved with save_pretrained.
`build_teacher(dir)`     both in one folder: a checkpoint a pipeline can load as teacher + tokenizer.
Fixtures: `tiny_teacher` (session-scoped folder path), `words_corpus_texts`.
"""

from __future__ import annotations

import os
import random

import pytest

WORDS = (
    "the of and to in is was for on that with as by at from his her an which this be are had it not "
    "river mountain city music science history language school market ocean forest train garden "
    "winter summer light stone paper window story number family water energy village table letter"
).split()
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_texts(n: int, seed: int = 0, min_words: int = 3, max_words: int = 40) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def build_tokenizer(out_dir: str, vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(make_texts(200, seed=123) + [" ".join(WORDS)], trainer=trainer)
    bos = tok.token_to_id("<|im_start|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A", pair="<|im_start|> $A $B", special_tokens=[("<|im_start|>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|endoftext|>",
        unk_token=None,
        pad_token="<|endoftext|>",
    )
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_llama(out_dir: str, vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # spread the logits so that truncation keeps a varied number of ids
        model.lm_head.weight.mul_(48.0)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


def build_teacher(out_dir: str, extra_vocab: int = 0) -> str:
    """Tokenizer + tiny Llama in one folder; logits dim = len(tokenizer) rounded up to 8 (+ extra)."""
    tok = build_tokenizer(out_dir)
    vocab = -(-len(tok) // 8) * 8 + extra_vocab
    build_tiny_llama(out_dir, vocab)
    return out_dir


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> str:
    return build_teacher(str(tmp_path_factory.mktemp("tiny_teacher")))
