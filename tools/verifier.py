"""A latent verifier: which animals, accessories and place a (noisy) cute-mini latent holds.

The input is a latent in the UNet's space (normalised per channel, [16, 32, 32]) noised as the flow noises
it, (1 - sigma) x0 + sigma noise, with sigma as a 17th channel; the output one logit per animal, item and
place of the vocabulary (independent sigmoids). It is trained on the prepared training latents and their
exact labels (tools/train_verifier.py), never on the judge's opinion, so that choosing among a prompt's
candidates with it and scoring the choice with the judge (tools/best_of.py) measures something real.

The network is diffusers' EncoderTiny, whose graph the core already builds (csrc/src/tiny_encoder.cpp), with
17 input channels and one output channel per label, each map's largest value the label's logit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cutecpp.vocab import Vocabulary, load_vocabulary, verifier_label

CATEGORIES = ("animal", "item", "place")
WIDTHS = (64, 64, 64)  # at 32x32, 16x16, 8x8 (EncoderTiny: one width)
BLOCKS = (0, 2, 1)  # no block at 32x32: 1.9x less work than (1, 1, 1) a step
PRIOR_LOGIT = -4.0  # about the labels' share in the training pictures (1.5 %)


def label_names(vocab: Vocabulary | None = None) -> list[str]:
    """The verifier's outputs, in order: 'category:id' for every animal, item and place."""
    vocab = vocab or load_vocabulary()
    return [verifier_label(e) for c in CATEGORIES for e in vocab.entries(c)]


def labels_of(words: list[str], names: list[str], vocab: Vocabulary | None = None) -> np.ndarray:
    """The multi-hot target of an encoder text's words (float32 [len(names)])."""
    vocab = vocab or load_vocabulary()
    index = {n: k for k, n in enumerate(names)}
    y = np.zeros(len(names), np.float32)
    for w in words:
        e = vocab.lookup(w)
        if e is not None and e.category in CATEGORIES:
            y[index[verifier_label(e)]] = 1.0
    return y


class Verifier(nn.Module):
    """diffusers' EncoderTiny (AutoencoderTiny's encoder: 3x3 convolutions, ReLU blocks, stride-2 steps) from
    the latent and its sigma to one logit map per label, then the largest of each map: "is it anywhere"."""

    def __init__(self, n_labels: int, in_channels: int = 16, widths: tuple[int, ...] = WIDTHS,
                 num_blocks: tuple[int, ...] = BLOCKS) -> None:
        from diffusers.models.autoencoders.vae import EncoderTiny

        super().__init__()
        self.config = dict(n_labels=n_labels, in_channels=in_channels, widths=list(widths),
                           num_blocks=list(num_blocks))
        self.encoder = EncoderTiny(in_channels + 1, n_labels, tuple(num_blocks), tuple(widths), "relu")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-initialised convolutions, each block's last one zero (blocks start as ReLU(x)), the output at the
        labels' prior: with PyTorch's default initialisation the ten convolutions without norms shrink the signal
        so far that a run stayed at the prior's loss for 400 steps (measured: 0.076 from step 150 to 400)."""
        for name, mod in self.encoder.named_modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
                if name.endswith("conv.4"):
                    nn.init.zeros_(mod.weight)
        out = self.encoder.layers[-1]
        nn.init.normal_(out.weight, std=0.01)
        nn.init.constant_(out.bias, PRIOR_LOGIT)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x [B, C, h, w] noised latents, sigma [B] their noise levels -> logits [B, n_labels]."""
        s = sigma.to(x.dtype)[:, None, None, None].expand(-1, 1, *x.shape[2:])
        return self.encoder(torch.cat([x, s], 1)).amax((2, 3))


def load(path) -> tuple[Verifier, list[str]]:
    """A checkpoint of tools/train_verifier.py (its EMA weights) and its label names."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = Verifier(**ckpt["config"])
    model.load_state_dict(ckpt["ema"])
    return model.eval(), ckpt["names"]


def asked_score(logits: np.ndarray, names: list[str], words: list[str], vocab: Vocabulary | None = None) -> float:
    """How sure the verifier is that a candidate holds every animal, item and place the prompt's encoder
    words ask for: the sum of their log-probabilities (higher is better)."""
    return mask_score(logits, labels_of(words, names, vocab) > 0)


def mask_score(logits: np.ndarray, asked: np.ndarray) -> float:
    """asked_score for the labels of a boolean mask (one mask serves every candidate of a prompt)."""
    logp = -np.logaddexp(0.0, -logits.astype(np.float64))  # log sigmoid
    return float(logp[asked].sum())
