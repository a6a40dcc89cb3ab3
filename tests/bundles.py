"""Tiny model bundles for tests, written with the `gguf` package.

The tensors come from real random-weight diffusers models built here (no
downloads), so a bundle the loader accepts proves the C++ tensor inventory
matches diffusers. Keys and tensors are plain dicts that tests corrupt before
writing.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from gguf import GGUFValueType, GGUFWriter

from cutecpp.bundle import tensor_name
from cutecpp.convert import (
    alignment_keys,
    header_keys,
    sampling_keys,
    tiny_decoder_keys,
    tiny_encoder_keys,
    unet_keys,
    vae_decoder_keys,
    vae_encoder_keys,
    verifier_keys,
)

ROOT = Path(__file__).resolve().parent.parent

# Small diffusers UNet2DConditionModel configs covering the supported family.
UNET_CONFIGS: dict[str, dict[str, Any]] = {
    # The smallest: base of the corruption corpus.
    "micro": dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, norm_num_groups=4, attention_head_dim=2,
    ),
    # SD 1.x layout: mid block, conv projections, two layers per block.
    "sd1": dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=8, attention_head_dim=(2, 4),
    ),
    # BK-SDM-style: no mid block, three levels.
    "bk_nomid": dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type=None, cross_attention_dim=24, norm_num_groups=8, attention_head_dim=4,
    ),
    # cute-mini-like: 16-channel latent, linear projections.
    "latent16": dict(
        sample_size=8, in_channels=16, out_channels=16, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=24, norm_num_groups=8, attention_head_dim=2, use_linear_projection=True,
    ),
    # Transformer blocks per level (tools/deepen_unet.py): a different depth at each level, so that the
    # mid block (the last level's depth) and the up blocks (the reversed list) are told apart.
    "deep": dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, norm_num_groups=8, attention_head_dim=2, transformer_layers_per_block=(2, 3),
    ),
    # For the q8_0 int8 products (test_gemm_q8.py): Linears with 40 outputs (not
    # a multiple of the 16-output panels), and 3x3 convs of 160+ channels whose
    # Winograd U is quantized (IC a multiple of 32, IC x OC above the direct
    # kernel's 128 x 128).
    "q8": dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(40, 160), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=8, attention_head_dim=(5, 8),
    ),
    # Widths that are not multiples of 8 (the kernels' vector width): every
    # vectorised loop runs its tail (test_fused.py also uses an odd latent side).
    "odd": dict(
        sample_size=6, in_channels=5, out_channels=3, block_out_channels=(15, 25), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=7, norm_num_groups=5, attention_head_dim=(3, 5),
    ),
}


# diffusers AutoencoderTiny configs: the TAESD layout (4 stages) shrunk, and a
# cute-mini-like one: 16 latent channels, 5 stages (x16 upsampling).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "taesd": dict(latent_channels=4, decoder_block_out_channels=(8, 8, 8, 8), num_decoder_blocks=(3, 3, 3, 1),
                  encoder_block_out_channels=(8, 8, 8, 8), num_encoder_blocks=(1, 3, 3, 3)),
    "x16": dict(latent_channels=16, decoder_block_out_channels=(8,) * 5, num_decoder_blocks=(1, 1, 1, 1, 1),
                encoder_block_out_channels=(8,) * 5, num_encoder_blocks=(1, 1, 1, 1, 1)),
}

# diffusers AutoencoderKL configs: the SD VAE layout shrunk (mid-block attention, x2), and a
# 16-channel latent with three levels (x4), no mid-block attention, a shift factor, three
# resnets per up block and a channel change inside the up path.
VAE_CONFIGS: dict[str, dict[str, Any]] = {
    "sd": dict(latent_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
               down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
    "latent16": dict(latent_channels=16, block_out_channels=(8, 16, 16), layers_per_block=2, norm_num_groups=4,
                     down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                     mid_block_add_attention=False, scaling_factor=0.3611, shift_factor=0.1159),
}

# Alignment modules (tools/alignment_ref.py): two layers with 3 heads of 8; no layers; one head
# of 16 with a small eps; and one whose matrices all hold whole q8_0/q4_0 blocks (rows of 32s).
ALIGNMENT_CONFIGS: dict[str, dict[str, Any]] = {
    "small": dict(in_dim=32, dim=24, ctx_dim=16, layers=2, heads=3, ff_mult=4, norm_eps=1e-5),
    "no_layers": dict(in_dim=32, dim=24, ctx_dim=16, layers=0, heads=3, ff_mult=4, norm_eps=1e-5),
    "one_head": dict(in_dim=12, dim=16, ctx_dim=20, layers=1, heads=1, ff_mult=2, norm_eps=1e-6),
    "blocks32": dict(in_dim=64, dim=64, ctx_dim=32, layers=2, heads=4, ff_mult=2, norm_eps=1e-5),
}


# Training schedules (cutecpp.sampling.*): SD 1.x's (scaled_linear 0.00085..0.012, leading,
# offset 1), a linear/linspace and a trailing v-prediction one, and rectified flow with shift 1
# and 3. The beta keys of the flow ones are required but unused.
_SD_SAMPLING: dict[str, Any] = dict(
    prediction="epsilon", num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
    beta_end=0.012, timestep_spacing="leading", steps_offset=1, flow_shift=1.0, default_sampler="euler_a",
    default_steps=20, default_cfg=7.5,
)
SAMPLING_CONFIGS: dict[str, dict[str, Any]] = {
    "sd": _SD_SAMPLING,
    "linear": dict(_SD_SAMPLING, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                   timestep_spacing="linspace", steps_offset=0),
    "trailing_v": dict(_SD_SAMPLING, prediction="v_prediction", timestep_spacing="trailing", steps_offset=0),
    "flow1": dict(_SD_SAMPLING, prediction="flow", flow_shift=1.0, default_sampler="flow_euler"),
    "flow3": dict(_SD_SAMPLING, prediction="flow", flow_shift=3.0, default_sampler="flow_euler", default_cfg=5.0),
}


@dataclass
class Bundle:
    """What goes into one bundle file, before writing."""

    kv: dict[str, tuple[GGUFValueType, Any, GGUFValueType | None]] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    architecture: str = "cutecpp"

    def set(self, key: str, vtype: GGUFValueType, value: Any, sub_type: GGUFValueType | None = None) -> None:
        self.kv[key] = (vtype, value, sub_type)

    def write(self, path: Path) -> Path:
        writer = GGUFWriter(str(path), self.architecture)
        for key, (vtype, value, sub_type) in self.kv.items():
            writer.add_key_value(key, value, vtype, sub_type=sub_type)
        for name, array in self.tensors.items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path


def micro_contexts(tokens: tuple[int, int] = (5, 5), seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A cond and an uncond UNet context for the micro UNet, of these token counts (standard normal)."""
    rng = np.random.default_rng(seed)
    dim = UNET_CONFIGS["micro"]["cross_attention_dim"]
    return tuple(rng.standard_normal((t, dim)).astype(np.float32) for t in tokens)


def with_sampling(bundle: Bundle, sampling: str | dict[str, Any] = "sd", **changes: Any) -> Bundle:
    """A copy of `bundle` (tensors shared) with a cutecpp.sampling section: a name from
    SAMPLING_CONFIGS or a dict, with `changes` applied."""
    config = dict(SAMPLING_CONFIGS[sampling] if isinstance(sampling, str) else sampling, **changes)
    out = Bundle(kv=dict(bundle.kv), tensors=bundle.tensors, architecture=bundle.architecture)
    out.kv.update(sampling_keys(config))
    return out


def make_unet(name: str, seed: int = 0):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**UNET_CONFIGS[name]).eval()


def unet_bundle(name: str = "micro", seed: int = 0, f16: bool = False) -> Bundle:
    """A valid bundle holding the diffusers UNet `name` (f16: 2-D+ tensors as float16)."""
    unet = make_unet(name, seed)
    b = Bundle()
    b.kv.update(header_keys(f"test-{name}-{seed}", ["unet"], name=f"test {name}", license="MIT"))
    b.kv.update(unet_keys(dict(unet.config)))
    for key, tensor in unet.state_dict().items():
        array = tensor.detach().numpy().astype(np.float32)
        if f16 and array.ndim > 1:
            array = array.astype(np.float16)
        b.tensors[tensor_name("unet", key)] = array
    return b


def make_tiny(name: str, seed: int = 0):
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(**TINY_CONFIGS[name]).eval()


def make_kl(name: str, seed: int = 0):
    """An AutoencoderKL whose norm weights and biases are random too (diffusers starts them at 1 and 0)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIGS[name]).eval()
    with torch.no_grad():
        for param in vae.parameters():
            if param.ndim == 1:
                param.add_(0.2 * torch.randn_like(param))
    return vae


def decoder_state(model, keep: tuple[str, ...] = ("decoder.",)) -> dict[str, np.ndarray]:
    """The state-dict entries a decoder component stores, as float32 numpy arrays."""
    return {k: t.detach().numpy().astype(np.float32) for k, t in model.state_dict().items() if k.startswith(keep)}


def tiny_decoder_bundle(name: str = "taesd", seed: int = 0) -> Bundle:
    """A valid bundle holding the decoder of the diffusers AutoencoderTiny `name`."""
    vae = make_tiny(name, seed)
    b = Bundle()
    b.kv.update(header_keys(f"test-tiny-{name}-{seed}", ["tiny_decoder"]))
    b.kv.update(tiny_decoder_keys(dict(vae.config)))
    for key, array in decoder_state(vae).items():
        b.tensors[tensor_name("tiny_decoder", key)] = array
    return b


def vae_decoder_bundle(name: str = "sd", seed: int = 0) -> Bundle:
    """A valid bundle holding post_quant_conv and the decoder of the diffusers AutoencoderKL `name`."""
    vae = make_kl(name, seed)
    b = Bundle()
    b.kv.update(header_keys(f"test-vae-{name}-{seed}", ["vae_decoder"]))
    b.kv.update(vae_decoder_keys(dict(vae.config)))
    for key, array in decoder_state(vae, ("decoder.", "post_quant_conv.")).items():
        b.tensors[tensor_name("vae_decoder", key)] = array
    return b


def tiny_encoder_bundle(name: str = "taesd", seed: int = 0) -> Bundle:
    """A valid bundle holding the encoder of the diffusers AutoencoderTiny `name`."""
    vae = make_tiny(name, seed)
    b = Bundle()
    b.kv.update(header_keys(f"test-tiny-encoder-{name}-{seed}", ["tiny_encoder"]))
    b.kv.update(tiny_encoder_keys(dict(vae.config)))
    for key, array in decoder_state(vae, ("encoder.",)).items():
        b.tensors[tensor_name("tiny_encoder", key)] = array
    return b


def vae_encoder_bundle(name: str = "sd", seed: int = 0) -> Bundle:
    """A valid bundle holding the encoder and quant_conv of the diffusers AutoencoderKL `name`."""
    vae = make_kl(name, seed)
    b = Bundle()
    b.kv.update(header_keys(f"test-vae-encoder-{name}-{seed}", ["vae_encoder"]))
    b.kv.update(vae_encoder_keys(dict(vae.config)))
    for key, array in decoder_state(vae, ("encoder.", "quant_conv.")).items():
        b.tensors[tensor_name("vae_encoder", key)] = array
    return b


@functools.cache
def alignment_ref() -> ModuleType:
    """tools/alignment_ref.py (not a package: tools/ is not importable), loaded once."""
    spec = importlib.util.spec_from_file_location("alignment_ref", ROOT / "tools" / "alignment_ref.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def alignment_config(config: str | dict[str, Any]) -> dict[str, Any]:
    return dict(ALIGNMENT_CONFIGS[config]) if isinstance(config, str) else dict(config)


def make_alignment(config: str | dict[str, Any] = "small", seed: int = 0):
    """A reference Alignment (a name from ALIGNMENT_CONFIGS or a config dict) with random weights,
    its norms and biases too (torch starts LayerNorms at 1 and 0)."""
    import torch

    torch.manual_seed(seed)
    module = alignment_ref().Alignment(alignment_config(config)).eval()
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim == 1:
                param.add_(0.2 * torch.randn_like(param))
    return module


def alignment_bundle(config: str | dict[str, Any] = "small", seed: int = 0) -> Bundle:
    """A valid bundle holding the alignment module `config`, f32."""
    module = make_alignment(config, seed)
    b = Bundle()
    b.kv.update(header_keys(f"test-alignment-{seed}", ["alignment"]))
    b.kv.update(alignment_keys(module.config()))
    for key, tensor in module.state_dict().items():
        b.tensors[tensor_name("alignment", key)] = tensor.detach().numpy().astype(np.float32)
    return b


FULL_COMPONENTS = ["unet", "tiny_decoder", "vae_decoder", "tiny_encoder", "vae_encoder", "alignment"]


def full_bundle(seed: int = 0) -> Bundle:
    """One bundle with every component: the micro UNet, a TAESD-style and an SD-style autoencoder
    (both halves each), and an alignment module whose context width is the UNet's."""
    b = Bundle()
    ctx_dim = UNET_CONFIGS["micro"]["cross_attention_dim"]
    parts = [unet_bundle("micro", seed), tiny_decoder_bundle("taesd", seed), vae_decoder_bundle("sd", seed),
             tiny_encoder_bundle("taesd", seed), vae_encoder_bundle("sd", seed),
             alignment_bundle(dict(ALIGNMENT_CONFIGS["small"], ctx_dim=ctx_dim), seed)]
    for part in parts:
        b.kv.update(part.kv)
        b.tensors.update(part.tensors)
    b.kv.update(header_keys(f"test-full-{seed}", FULL_COMPONENTS))
    return b



def tiny_text_encoder(folder: Path, layers: int) -> tuple[Path, str]:
    """A tiny random qwen2 encoder built the way cutecpp.encoder_build builds the real one (cut to
    `layers` blocks, vocabulary pruned to the product's words, source identity recorded): its path
    and its source's sha256, which a bundle names in `cutecpp.text_encoder.sha256`."""
    import hashlib

    from tiny_qwen import TinyQwen

    from cutecpp import encoder_build
    from cutecpp.vocab import load_vocabulary

    source = TinyQwen().write(folder / "tiny.gguf")
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    built = encoder_build.prune(source, folder / "encoder.gguf", layers, load_vocabulary().encoder_words(),
                                extra_meta={"source_sha256": sha, "layers": str(layers)})
    return built.path, sha


def pipeline_bundle(model_id: str, encoder_sha: str, *, layers: int, default_steps: int, sampling: str = "flow3",
                    **sampling_changes: Any) -> Bundle:
    """What Pipeline.load needs: the micro UNet, a TAESD-style decoder, an alignment module from the tiny
    text encoder's width to the UNet's context, sampling settings and the text encoder's identity."""
    from tiny_qwen import TinyQwen

    from cutecpp.convert import text_encoder_keys

    b = Bundle()
    ctx_dim = UNET_CONFIGS["micro"]["cross_attention_dim"]
    align = dict(ALIGNMENT_CONFIGS["small"], in_dim=TinyQwen().dim, ctx_dim=ctx_dim)
    for part in (unet_bundle("micro"), tiny_decoder_bundle("taesd"), alignment_bundle(align)):
        b.kv.update(part.kv)
        b.tensors.update(part.tensors)
    b.kv.update(header_keys(model_id, ["unet", "tiny_decoder", "alignment"]))
    b.kv.update(sampling_keys(dict(SAMPLING_CONFIGS[sampling], default_steps=default_steps, **sampling_changes)))
    b.kv.update(text_encoder_keys({"sha256": encoder_sha, "layers": layers}))
    return b


def tools_module(name: str) -> ModuleType:
    """A module of tools/ (imported with tools/ on the path, as the tools import each other)."""
    tools = str(ROOT / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    return importlib.import_module(name)


def make_verifier(labels: list[str], in_channels: int = 4, widths: tuple[int, ...] = (8, 8, 8), seed: int = 0,
                  scale: float = 0.3):
    """tools/verifier.py's network with random weights (normal, `scale`: its own initialisation starts
    every block as the identity and every label at the prior, too plain a function to test against)."""
    import torch

    torch.manual_seed(seed)
    model = tools_module("verifier").Verifier(len(labels), in_channels=in_channels, widths=widths,
                                              num_blocks=(1,) * len(widths))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale)
    return model.eval()


def with_verifier(bundle: Bundle, model, labels: list[str]) -> Bundle:
    """A copy of `bundle` (tensors shared) with `model` (make_verifier) as its verifier component."""
    config = {"_class_name": "Verifier", "in_channels": model.config["in_channels"], "labels": labels,
              "block_out_channels": model.config["widths"], "num_blocks": model.config["num_blocks"],
              "act_fn": "relu"}
    out = Bundle(kv=dict(bundle.kv), tensors=dict(bundle.tensors), architecture=bundle.architecture)
    out.kv.update(verifier_keys(config))
    components = [c for c in out.kv["cutecpp.components"][1] if c != "verifier"]
    out.kv["cutecpp.components"] = (GGUFValueType.ARRAY, [*components, "verifier"], GGUFValueType.STRING)
    for key, tensor in model.state_dict().items():
        out.tensors[tensor_name("verifier", key)] = tensor.detach().numpy().astype(np.float32)
    return out
