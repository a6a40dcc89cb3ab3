"""A tiny random-weight qwen2 GGUF that llama.cpp loads, and a numpy reference of its forward pass.

The vocabulary is real byte-level BPE (GPT-2 byte alphabet, merges learned here from a word list),
so tokenization, truncation and vocabulary pruning behave as they do on the real encoder.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from cutecpp.encoder_build import BYTE_CHARS

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Words the tests prune for, and others that only the unpruned vocabulary knows.
WORDS = ["小熊", "小猫", "穿", "蓝", "裤子", "戴", "红", "帽子", "冰山上", "笑", "两只", "气球", "bear", "hat"]
OTHER_WORDS = ["赛博朋克", "火箭", "城市", "机器人", "rocket", "city", "robot", "hello world"]


def _learn_merges(texts: list[str], n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training: merge the most frequent adjacent pair, `n_merges` times."""
    seqs = [[BYTE_CHARS[b] for b in t.encode("utf-8")] for t in texts]
    merges = []
    for _ in range(n_merges):
        pairs = Counter(p for s in seqs for p in zip(s, s[1:], strict=False))
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for s in seqs:
            i = 0
            while i < len(s) - 1:
                if (s[i], s[i + 1]) == best:
                    s[i : i + 2] = [s[i] + s[i + 1]]
                i += 1
    return merges


@dataclass
class TinyQwen:
    dim: int = 64
    heads: int = 4
    kv_heads: int = 2
    ff: int = 96
    blocks: int = 3
    eps: float = 1e-6
    rope_base: float = 10000.0
    seed: int = 0
    tokens: list[str] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        texts = WORDS + [" " + w for w in WORDS] + OTHER_WORDS + [" " + w for w in OTHER_WORDS]
        pairs = _learn_merges(texts, 120)
        self.tokens = list(BYTE_CHARS) + [a + b for a, b in pairs] + SPECIALS
        self.types = [1] * (len(self.tokens) - len(SPECIALS)) + [3] * len(SPECIALS)
        self.merges = [f"{a} {b}" for a, b in pairs]
        rng = np.random.default_rng(self.seed)
        d, hd = self.dim, self.dim // self.heads
        kv = self.kv_heads * hd

        def w(*shape, scale=0.08):
            return (rng.standard_normal(shape) * scale).astype(np.float32)

        ws = {"token_embd.weight": w(len(self.tokens), d, scale=1.0), "output_norm.weight": 1 + w(d)}
        for i in range(self.blocks):
            p = f"blk.{i}."
            ws |= {
                p + "attn_norm.weight": 1 + w(d), p + "ffn_norm.weight": 1 + w(d),
                p + "attn_q.weight": w(d, d), p + "attn_q.bias": w(d),
                p + "attn_k.weight": w(kv, d), p + "attn_k.bias": w(kv),
                p + "attn_v.weight": w(kv, d), p + "attn_v.bias": w(kv),
                p + "attn_output.weight": w(d, d),
                p + "ffn_gate.weight": w(self.ff, d), p + "ffn_up.weight": w(self.ff, d),
                p + "ffn_down.weight": w(d, self.ff),
            }
        # The embedding is stored as Q8_0, as the real encoder stores it quantized: pruning must
        # copy quantized rows. The reference uses the dequantized values.
        q = gguf.quants.quantize(ws["token_embd.weight"], gguf.GGMLQuantizationType.Q8_0)
        self._embd_q8 = q
        ws["token_embd.weight"] = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)
        self.weights = ws

    def write(self, path: str | Path, *, extra_tensor: bool = False) -> Path:
        path = Path(path)
        wr = gguf.GGUFWriter(path, arch="qwen2")
        wr.add_name("tiny random qwen2 (cutecpp tests)")
        wr.add_block_count(self.blocks)
        wr.add_context_length(256)
        wr.add_embedding_length(self.dim)
        wr.add_feed_forward_length(self.ff)
        wr.add_head_count(self.heads)
        wr.add_head_count_kv(self.kv_heads)
        wr.add_rope_freq_base(self.rope_base)
        wr.add_layer_norm_rms_eps(self.eps)
        wr.add_tokenizer_model("gpt2")
        wr.add_tokenizer_pre("qwen2")
        wr.add_token_list(self.tokens)
        wr.add_token_types(self.types)
        wr.add_token_merges(self.merges)
        wr.add_bos_token_id(self.tokens.index("<|endoftext|>"))
        wr.add_eos_token_id(self.tokens.index("<|im_end|>"))
        wr.add_add_bos_token(False)
        for name, value in self.weights.items():
            if name == "token_embd.weight":
                wr.add_tensor(name, self._embd_q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                wr.add_tensor(name, value)
        if extra_tensor:
            wr.add_tensor("output.weight", self.weights["token_embd.weight"].copy())
        wr.write_header_to_file()
        wr.write_kv_data_to_file()
        wr.write_tensors_to_file()
        wr.close()
        return path

    def piece_ids(self, pieces: list[str]) -> list[int]:
        return [self.tokens.index(p) for p in pieces]

    def forward(self, token_ids: list[int], blocks: int | None = None) -> np.ndarray:
        """Final-norm hidden states after the first `blocks` blocks (float64 reference)."""
        ws = {k: v.astype(np.float64) for k, v in self.weights.items()}
        d, hd, n = self.dim, self.dim // self.heads, len(token_ids)
        group = self.heads // self.kv_heads
        x = ws["token_embd.weight"][token_ids]
        pos = np.arange(n)[:, None]
        inv = self.rope_base ** (-np.arange(0, hd, 2) / hd)
        ang = pos * inv[None, :]
        cos, sin = np.cos(ang), np.sin(ang)

        def rms(v, g):
            return v / np.sqrt((v * v).mean(-1, keepdims=True) + self.eps) * g

        def rope(t):  # NEOX style (qwen2): rotate the two halves of each head
            a, b = t[..., : hd // 2], t[..., hd // 2 :]
            return np.concatenate([a * cos[:, None] - b * sin[:, None], a * sin[:, None] + b * cos[:, None]], -1)

        mask = np.triu(np.full((n, n), -np.inf), 1)
        for i in range(self.blocks if blocks is None else blocks):
            p = f"blk.{i}."
            h = rms(x, ws[p + "attn_norm.weight"])
            q = (h @ ws[p + "attn_q.weight"].T + ws[p + "attn_q.bias"]).reshape(n, self.heads, hd)
            k = (h @ ws[p + "attn_k.weight"].T + ws[p + "attn_k.bias"]).reshape(n, self.kv_heads, hd)
            v = (h @ ws[p + "attn_v.weight"].T + ws[p + "attn_v.bias"]).reshape(n, self.kv_heads, hd)
            q, k = rope(q), rope(k)
            out = np.empty((n, self.heads, hd))
            for hh in range(self.heads):
                s = q[:, hh] @ k[:, hh // group].T / np.sqrt(hd) + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                out[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, hh // group]
            x = x + out.reshape(n, d) @ ws[p + "attn_output.weight"].T
            h = rms(x, ws[p + "ffn_norm.weight"])
            g = h @ ws[p + "ffn_gate.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * (h @ ws[p + "ffn_up.weight"].T)) @ ws[p + "ffn_down.weight"].T
        return rms(x, ws["output_norm.weight"])
