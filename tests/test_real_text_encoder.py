"""The real text encoder, built from the installed PyPI parts (runtime dependencies of cutecpp):
the parts match their sha256, and vocabulary pruning keeps every word of the shipped vocabulary
exactly: the same pieces, the same hidden states as the truncated but unpruned encoder."""

from __future__ import annotations

import numpy as np
import pytest

from cutecpp import encoder_build as eb
from cutecpp.text_encoder import TextEncoder, vocab_tokenizer
from cutecpp.vocab import load_vocabulary

LAYERS = 12


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real-encoder")
    full = tmp / "full.gguf"
    eb.assemble(full)  # raises unless the parts are the recorded bytes
    words = load_vocabulary().encoder_words()
    truncated = eb.prune(full, tmp / "truncated.gguf", LAYERS)
    pruned = eb.prune(full, tmp / "pruned.gguf", LAYERS, words)
    full.unlink()
    return words, truncated, pruned


def test_sizes(built):
    words, truncated, pruned = built
    assert truncated.n_vocab == pruned.n_vocab_source == 151_936
    assert 256 < pruned.n_vocab < 5_000
    assert pruned.size < truncated.size - 80e6  # the 151,936-row embedding is most of the difference


def test_every_word_keeps_its_pieces(built):
    words, truncated, pruned = built
    tok_a, tok_b = vocab_tokenizer(truncated.path), vocab_tokenizer(pruned.path)
    text_a = TextEncoder(truncated.path, threads=2)
    text_b = TextEncoder(pruned.path, threads=2)
    piece = lambda enc, ids: [enc._llm._model.token_get_text(t) for t in ids]  # noqa: E731
    for w in words:
        assert piece(text_a, tok_a(w)) == piece(text_b, tok_b(w)), w


def test_every_word_keeps_its_hidden_states(built):
    words, truncated, pruned = built
    a = TextEncoder(truncated.path, threads=2)
    b = TextEncoder(pruned.path, threads=2)
    assert a.n_layers == b.n_layers == LAYERS and a.hidden_size == 896
    # Word sequences of up to the encoder's token limit, covering every word once.
    seqs, cur = [], []
    for w in words:
        if len(a.tokens_for(cur + [w])) > a.max_tokens:
            seqs.append(cur)
            cur = []
        cur.append(w)
    seqs.append(cur)
    for seq in seqs:
        assert np.array_equal(a.encode(seq), b.encode(seq)), seq
