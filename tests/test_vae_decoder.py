"""The C++ VAE decoder against diffusers' AutoencoderKL on tiny random-weight models.

cutecpp's vae_decode takes latents as the UNet produced them; diffusers pipelines
call vae.decode(latents / scaling_factor + shift_factor), which is the reference.
f32: max abs error <= 1e-4 x the output's scale, whole decoder and every block.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from bundles import VAE_CONFIGS, make_kl, vae_decoder_bundle
from gguf import GGUFValueType

import cutecpp
from cutecpp.bundle import tensor_name
from cutecpp.convert import VAE_DEFAULTS, ConvertError, vae_decoder_keys

TOL = 1e-4
U32, STR, ARR = GGUFValueType.UINT32, GGUFValueType.STRING, GGUFValueType.ARRAY


def reference(vae, latents: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """diffusers' decoded image and each traced block's output, in the order the graph runs them."""
    modules = [("vae_decoder.post_quant_conv", vae.post_quant_conv),
               ("vae_decoder.decoder.conv_in", vae.decoder.conv_in),
               ("vae_decoder.decoder.mid_block", vae.decoder.mid_block)]
    modules += [(f"vae_decoder.decoder.up_blocks.{i}", b) for i, b in enumerate(vae.decoder.up_blocks)]
    modules.append(("vae_decoder.decoder.conv_out", vae.decoder.conv_out))
    blocks: dict[str, np.ndarray] = {}

    def hook(name):
        return lambda _m, _a, out: blocks.__setitem__(name, out.detach().numpy().copy())

    handles = [m.register_forward_hook(hook(name)) for name, m in modules]
    shift = vae.config.shift_factor or 0.0
    with torch.no_grad():
        out = vae.decode(torch.from_numpy(latents) / vae.config.scaling_factor + shift).sample.numpy()
    for h in handles:
        h.remove()
    return out, {name: blocks[name] for name, _ in modules}


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max()) / float(np.abs(ref).max())


@pytest.mark.parametrize("name", sorted(VAE_CONFIGS))
def test_vae_decoder_matches_diffusers(name, tmp_path):
    path = vae_decoder_bundle(name).write(tmp_path / f"{name}.gguf")
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    ctx.set_trace(True)
    rng = np.random.default_rng(0)
    # Non-square and odd, so a swapped width and height or a wrong token order shows.
    latents = rng.standard_normal((2, VAE_CONFIGS[name]["latent_channels"], 5, 3)).astype(np.float32)
    ref, ref_blocks = reference(make_kl(name), latents)

    got = ctx.vae_decode(latents)
    f = 2 ** (len(VAE_CONFIGS[name]["block_out_channels"]) - 1)
    assert got.shape == ref.shape == (2, 3, 5 * f, 3 * f)
    report = "\n".join(f"{b}: {relative_error(ctx.trace(b), r):.2e}" for b, r in ref_blocks.items())
    assert relative_error(got, ref) <= TOL, report
    for block, ref_block in ref_blocks.items():
        assert ctx.trace(block).shape == ref_block.shape, block
        assert relative_error(ctx.trace(block), ref_block) <= TOL, f"{block}\n{report}"


def test_replans_on_shape_change_and_repeats_exactly(tmp_path):
    path = vae_decoder_bundle("sd").write(tmp_path / "sd.gguf")
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    vae = make_kl("sd")
    rng = np.random.default_rng(1)
    for shape in [(1, 4, 4, 4), (1, 4, 2, 6), (1, 4, 4, 4)]:
        latents = rng.standard_normal(shape).astype(np.float32)
        got = ctx.vae_decode(latents)
        assert relative_error(got, reference(vae, latents)[0]) <= TOL
        assert np.array_equal(got, ctx.vae_decode(latents))


def test_sd_layout_names_fit_and_load(tmp_path):
    """The SD VAE's layout (4 levels, 3 resnets per up block, shortcuts), shrunk: every name fits 63 bytes."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(4, 4, 8, 8), layers_per_block=2, norm_num_groups=2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    names = [tensor_name("vae_decoder", k) for k in vae.state_dict() if k.startswith(("decoder.", "post_quant"))]
    assert max(len(n.encode()) for n in names) <= 63
    info = cutecpp.Model.load(vae_decoder_bundle("sd").write(tmp_path / "sd.gguf")).info
    assert info["config"]["components"]["vae_decoder"] == {
        "latent_channels": 4, "out_channels": 3, "block_out_channels": [8, 16], "layers_per_block": 1,
        "norm_num_groups": 4, "act_fn": "silu", "mid_block_add_attention": True,
        "scaling_factor": pytest.approx(0.18215), "shift_factor": 0.0, "latents_mean": None, "latents_std": None,
    }


@pytest.mark.parametrize(("key", "vtype", "value", "named", "words"), [
    ("act_fn", STR, "gelu", "act_fn", "unsupported value 'gelu'"),
    ("norm_num_groups", U32, 3, "block_out_channels", "not divisible by norm_num_groups 3"),
    ("layers_per_block", U32, 0, "layers_per_block", "outside [1, 8]"),
    ("block_out_channels", ARR, [8] * 9, "block_out_channels", "needs 1 to 8 levels"),
    ("scaling_factor", GGUFValueType.FLOAT32, 0.0, "scaling_factor", "must be in (0, 1000)"),
])
def test_bad_config_refused_naming_the_key(tmp_path, key, vtype, value, named, words):
    b = vae_decoder_bundle("sd")
    b.set(f"cutecpp.vae_decoder.{key}", vtype, value, U32 if vtype == ARR else None)
    with pytest.raises(cutecpp.UnsupportedError) as info:
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))
    assert f"key 'cutecpp.vae_decoder.{named}'" in str(info.value) and words in str(info.value)


def test_missing_attention_tensor_refused(tmp_path):
    b = vae_decoder_bundle("sd")
    del b.tensors["vae_decoder.decoder.mid_block.attentions.0.to_q.bias"]
    with pytest.raises(cutecpp.ModelError, match="missing tensor 'vae_decoder.decoder.mid_block.attentions.0.to_q"):
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))


def test_decode_without_vae_refused(micro_path, tmp_path):
    ctx = cutecpp.Context(cutecpp.Model.load(micro_path), threads=1)
    with pytest.raises(ValueError, match="no vae_decoder"):
        ctx.vae_decode(np.zeros((1, 4, 2, 2), np.float32))
    ctx = cutecpp.Context(cutecpp.Model.load(vae_decoder_bundle("sd").write(tmp_path / "sd.gguf")), threads=1)
    with pytest.raises(ValueError, match=r"expected latents \[n, 4, h, w\]"):
        ctx.vae_decode(np.zeros((1, 16, 2, 2), np.float32))
    with pytest.raises(cutecpp.InvalidArgumentError, match="batch size"):
        ctx.vae_decode(np.zeros((0, 4, 2, 2), np.float32))


# --- the converter's half: config.json -> keys ------------------------------------------------------


def test_defaults_are_diffusers_defaults():
    from diffusers import AutoencoderKL

    params = inspect.signature(AutoencoderKL.__init__).parameters
    defaults = {k: list(p.default) if isinstance(p.default, tuple) else p.default
                for k, p in params.items() if k != "self"}
    assert defaults == VAE_DEFAULTS


REFUSED = {
    "act_fn": "gelu",
    "up_block_types": ["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
    "latents_mean": [0.0] * 4,
    "latents_std": [1.0] * 4,
    "use_post_quant_conv": False,
    "layers_per_block": [1, 2],
    "mid_block_add_attention": "yes",
    "shift_factor": "small",
    "_class_name": "AutoencoderTiny",
    "decoder_type": "fancy",
}


@pytest.mark.parametrize("key", list(REFUSED))
def test_converter_refuses_naming_the_key(key):
    config = dict(make_kl("sd").config)
    with pytest.raises(ConvertError, match=key):
        vae_decoder_keys({**config, key: REFUSED[key]})


def test_converter_keys():
    config = dict(make_kl("latent16").config)
    keys = {k.removeprefix("cutecpp.vae_decoder."): v[1] for k, v in vae_decoder_keys(config).items()}
    assert keys == {"latent_channels": 16, "out_channels": 3, "block_out_channels": [8, 16, 16],
                    "layers_per_block": 2, "norm_num_groups": 4, "act_fn": "silu", "mid_block_add_attention": False,
                    "scaling_factor": 0.3611, "shift_factor": 0.1159}
    # Encoder-only settings and hints are accepted with any value; shift_factor null means 0.
    same = {**config, "in_channels": 4, "down_block_types": ["DownEncoderBlock2D"] * 3, "use_quant_conv": False,
            "force_upcast": False, "sample_size": 1024}
    assert vae_decoder_keys(same) == vae_decoder_keys(config)
    assert vae_decoder_keys({**config, "shift_factor": None})["cutecpp.vae_decoder.shift_factor"][1] == 0.0
