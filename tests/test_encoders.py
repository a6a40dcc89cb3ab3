"""The C++ encoders (tiny_encoder, vae_encoder) against diffusers' AutoencoderTiny and AutoencoderKL.

The models are tiny random-weight diffusers autoencoders saved with save_pretrained and converted
with `encoders=True`, as a user would. cutecpp's encoders return latents in the UNet's latent
space: diffusers' encode() (AutoencoderKL: the posterior's mode, i.e. its mean), then the latent
scaling the decoders undo first. f32: max abs error <= 1e-4 x the output's scale, whole encoder
and every block.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from bundles import (
    TINY_CONFIGS,
    VAE_CONFIGS,
    make_kl,
    tiny_decoder_bundle,
    tiny_encoder_bundle,
    vae_encoder_bundle,
)
from gguf import GGUFReader, GGUFValueType

import cutecpp
from cutecpp._binding import check, ffi, lib
from cutecpp.convert import ConvertError, convert, tiny_encoder_keys, vae_encoder_keys

TOL = 1e-4
# Reduced precision, against the f32 diffusers model: relative to the output's scale. Measured
# worst cases: f16 6e-4 (every matrix stored f16), q8_0 1.3e-3 on the "wide" model, whose Linears
# hold whole 32-value blocks (elsewhere q8_0 falls back to f16: conv kernels, narrow matrices).
TOL_DTYPE = {"f16": 3e-3, "q8_0": 1e-2}
U32, STR, ARR, F32 = (GGUFValueType.UINT32, GGUFValueType.STRING, GGUFValueType.ARRAY,
                            GGUFValueType.FLOAT32)

# Encoder configs beyond the decoder tests' (bundles.py): odd channel widths (not multiples of the
# kernels' 8-float vectors), 3 latent channels, a stage without blocks; for the KL one, no
# quant_conv, three resnets in a row and per-channel latent statistics.
TINY = {
    **TINY_CONFIGS,
    "odd": dict(latent_channels=3, encoder_block_out_channels=(5, 5, 5), num_encoder_blocks=(2, 0, 1),
                decoder_block_out_channels=(5, 5, 5), num_decoder_blocks=(1, 1, 1)),
}
KL = {
    **VAE_CONFIGS,
    "odd": dict(latent_channels=3, block_out_channels=(6, 10, 10), layers_per_block=3, norm_num_groups=2,
                down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                use_quant_conv=False, scaling_factor=0.7, latents_mean=[0.3, -0.2, 0.5],
                latents_std=[1.5, 0.5, 2.0]),
    # Channels in whole 32-value blocks, so q8_0 quantizes the attention's Linears.
    "wide": dict(latent_channels=4, block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=8,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
}
# AutoencoderTiny takes no per-channel statistics; the converter reads them from its config.json
# (cute-mini's export writes them there), so they are added to the saved file.
TINY_STATS = {"odd": dict(scaling_factor=1.25, shift_factor=0.1, latents_mean=[0.5, -1.0, 0.25],
                          latents_std=[0.5, 2.0, 1.5])}


def tiny_model(name: str):
    torch.manual_seed(0)
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(**TINY[name]).eval()


def kl_model(name: str):
    if name in VAE_CONFIGS:
        return make_kl(name)
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**KL[name]).eval()
    with torch.no_grad():  # random norms and biases too (diffusers starts them at 1 and 0)
        for param in vae.parameters():
            if param.ndim == 1:
                param.add_(0.2 * torch.randn_like(param))
    return vae


def factor(kind: str, name: str) -> int:
    config = TINY[name] if kind == "tiny" else KL[name]
    return 2 ** (len(config["encoder_block_out_channels" if kind == "tiny" else "block_out_channels"]) - 1)


def scaling(kind: str, name: str, vae) -> tuple[float, float, np.ndarray | None, np.ndarray | None]:
    """scaling_factor, shift_factor, latents_mean, latents_std as the bundle gets them."""
    config = {**dict(vae.config), **TINY_STATS.get(name, {})} if kind == "tiny" else dict(vae.config)
    stats = [None if config.get(k) is None else np.asarray(config[k], np.float32)[None, :, None, None]
             for k in ("latents_mean", "latents_std")]
    return config["scaling_factor"], config["shift_factor"] or 0.0, *stats


def scale(latents: np.ndarray, kind: str, name: str, vae) -> np.ndarray:
    """diffusers pipelines' scaling after encode(): the exact inverse of what the decoders undo."""
    sf, shift, mean, std = scaling(kind, name, vae)
    if mean is None:
        return (latents - shift) * sf
    return (latents - mean - shift) * sf / std


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(kind, name) -> (folder written by save_pretrained, the diffusers model)."""
    cache = {}

    def get(kind: str, name: str):
        if (kind, name) not in cache:
            vae = tiny_model(name) if kind == "tiny" else kl_model(name)
            folder = tmp_path_factory.mktemp(f"{kind}-{name}")
            vae.save_pretrained(folder)
            if kind == "tiny" and name in TINY_STATS:
                config = json.loads((folder / "config.json").read_text())
                (folder / "config.json").write_text(json.dumps({**config, **TINY_STATS[name]}))
            cache[kind, name] = folder, vae
        return cache[kind, name]

    return get


def converted(saved, kind: str, name: str, path, dtype: str = "f32") -> cutecpp.Context:
    folder, _ = saved(kind, name)
    folders = {"tiny_decoder": folder} if kind == "tiny" else {"vae": folder}
    convert(path, dtype, f"test-{kind}-{name}", encoders=True, **folders)
    return cutecpp.Context(cutecpp.Model.load(path), threads=2)


def images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, h, w)).astype(np.float32)


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max()) / float(np.abs(ref).max())


def tiny_reference(vae, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """diffusers' raw encoder output and every layer's output."""
    layers: dict[str, np.ndarray] = {}
    handles = [layer.register_forward_hook(
        lambda _m, _a, out, i=i: layers.__setitem__(f"tiny_encoder.encoder.layers.{i}", out.detach().numpy().copy()))
        for i, layer in enumerate(vae.encoder.layers)]
    with torch.no_grad():
        out = vae.encode(torch.from_numpy(x)).latents.numpy()
    for h in handles:
        h.remove()
    return out, layers


def kl_reference(vae, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """diffusers' posterior mode (the mean) and each traced block's output, in graph order."""
    enc = vae.encoder
    modules = [("vae_encoder.encoder.conv_in", enc.conv_in)]
    modules += [(f"vae_encoder.encoder.down_blocks.{i}", b) for i, b in enumerate(enc.down_blocks)]
    modules += [("vae_encoder.encoder.mid_block", enc.mid_block), ("vae_encoder.encoder.conv_out", enc.conv_out)]
    if vae.quant_conv is not None:
        modules.append(("vae_encoder.quant_conv", vae.quant_conv))
    blocks: dict[str, np.ndarray] = {}
    handles = [m.register_forward_hook(lambda _m, _a, out, n=n: blocks.__setitem__(n, out.detach().numpy().copy()))
               for n, m in modules]
    with torch.no_grad():
        out = vae.encode(torch.from_numpy(x)).latent_dist.mode().numpy()
    for h in handles:
        h.remove()
    return out, {n: blocks[n] for n, _ in modules}


def check_blocks(ctx: cutecpp.Context, ref_blocks: dict[str, np.ndarray], tol: float) -> None:
    report = "\n".join(f"{b}: {relative_error(ctx.trace(b), r):.2e}" for b, r in ref_blocks.items())
    for block, ref in ref_blocks.items():  # in graph order: the first failure is where it diverged
        got = ctx.trace(block)
        assert got.shape == ref.shape, block
        assert relative_error(got, ref) <= tol, f"{block} diverges first\n{report}"


# --- parity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_encoder_matches_diffusers(saved, name, tmp_path):
    _, vae = saved("tiny", name)
    ctx = converted(saved, "tiny", name, tmp_path / "t.gguf")
    ctx.set_trace(True)
    f = factor("tiny", name)
    x = images(2, 5 * f, 3 * f)  # non-square, odd multiples: a swapped side or a wrong stride shows
    raw, layers = tiny_reference(vae, x)
    got = ctx.tiny_encode(x)
    ref = scale(raw, "tiny", name, vae)
    assert got.shape == ref.shape == (2, TINY[name]["latent_channels"], 5, 3)
    assert len(layers) == 2 + sum(TINY[name]["num_encoder_blocks"]) + len(TINY[name]["num_encoder_blocks"]) - 1
    check_blocks(ctx, layers, TOL)  # first, so that a failure names the layer that diverged first
    assert relative_error(got, ref) <= TOL


@pytest.mark.parametrize("name", sorted(KL))
def test_vae_encoder_matches_diffusers(saved, name, tmp_path):
    _, vae = saved("kl", name)
    ctx = converted(saved, "kl", name, tmp_path / "v.gguf")
    ctx.set_trace(True)
    f = factor("kl", name)
    x = images(2, 5 * f, 3 * f)
    mean, blocks = kl_reference(vae, x)
    got = ctx.vae_encode(x)
    ref = scale(mean, "kl", name, vae)
    assert got.shape == ref.shape == (2, KL[name]["latent_channels"], 5, 3)
    check_blocks(ctx, blocks, TOL)  # first, so that a failure names the block that diverged first
    assert relative_error(got, ref) <= TOL


@pytest.mark.parametrize("dtype", sorted(TOL_DTYPE))
@pytest.mark.parametrize(("kind", "name"), [("tiny", "taesd"), ("kl", "sd"), ("kl", "wide")])
def test_reduced_precision(saved, kind, name, dtype, tmp_path):
    _, vae = saved(kind, name)
    ctx = converted(saved, kind, name, tmp_path / "r.gguf", dtype)
    f = factor(kind, name)
    x = images(1, 4 * f, 6 * f, seed=3)
    if kind == "tiny":
        got, ref = ctx.tiny_encode(x), scale(tiny_reference(vae, x)[0], kind, name, vae)
    else:
        got, ref = ctx.vae_encode(x), scale(kl_reference(vae, x)[0], kind, name, vae)
    assert relative_error(got, ref) <= TOL_DTYPE[dtype]
    stored = {t.name: t.tensor_type.name for t in GGUFReader(tmp_path / "r.gguf").tensors}
    if name == "wide" and dtype == "q8_0":  # not vacuous: the attention's matrices are quantized
        assert stored["vae_encoder.encoder.mid_block.attentions.0.to_q.weight"] == "Q8_0"


def test_round_trip_in_the_unets_latent_space(saved, tmp_path):
    """encode then decode with cutecpp is diffusers' decode(encode(x)): each encoder's scaling is
    exactly what its decoder undoes, with per-channel statistics too."""
    for kind, name in (("tiny", "odd"), ("kl", "odd"), ("kl", "latent16")):
        _, vae = saved(kind, name)
        ctx = converted(saved, kind, name, tmp_path / f"{kind}-{name}.gguf")
        f = factor(kind, name)
        x = images(1, 4 * f, 2 * f, seed=5)
        with torch.no_grad():
            if kind == "tiny":
                z = ctx.tiny_encode(x)
                back = ctx.tiny_decode(z)
                ref = vae.decode(vae.encode(torch.from_numpy(x)).latents).sample.numpy()
            else:
                z = ctx.vae_encode(x)
                back = ctx.vae_decode(z)
                ref = vae.decode(vae.encode(torch.from_numpy(x)).latent_dist.mode()).sample.numpy()
        assert back.shape == ref.shape == x.shape
        assert relative_error(back, ref) <= TOL, (kind, name)
        # The scaling is not the identity here, so the check is not vacuous.
        sf, shift, mean, _ = scaling(kind, name, vae)
        assert sf != 1.0 or shift != 0.0 or mean is not None


def test_replans_on_shape_change_and_repeats_exactly(saved, tmp_path):
    _, vae = saved("tiny", "taesd")
    ctx = converted(saved, "tiny", "taesd", tmp_path / "t.gguf")
    for shape in [(1, 16, 16), (2, 8, 24), (1, 16, 16)]:
        x = images(*shape, seed=shape[1])
        got = ctx.tiny_encode(x)
        assert relative_error(got, scale(tiny_reference(vae, x)[0], "tiny", "taesd", vae)) <= TOL
        assert np.array_equal(got, ctx.tiny_encode(x))


# --- errors ------------------------------------------------------------------------------------------


def test_side_not_a_multiple_refused(saved, tmp_path):
    ctx = converted(saved, "kl", "latent16", tmp_path / "v.gguf")  # f = 4
    with pytest.raises(cutecpp.InvalidArgumentError, match="multiples of 4 .* got 12x10"):
        ctx.vae_encode(images(1, 12, 10))
    with pytest.raises(cutecpp.InvalidArgumentError, match="got 2x4"):
        ctx.vae_encode(images(1, 2, 4))
    with pytest.raises(cutecpp.InvalidArgumentError, match="batch size"):
        ctx.vae_encode(np.zeros((0, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"expected images \[n, 3, H, W\]"):
        ctx.vae_encode(np.zeros((1, 4, 8, 8), np.float32))
    tiny = converted(saved, "tiny", "taesd", tmp_path / "t.gguf")  # f = 8
    with pytest.raises(cutecpp.InvalidArgumentError, match="multiples of 8 .* got 16x12"):
        tiny.tiny_encode(images(1, 16, 12))


def test_encode_without_encoder_refused(saved, tmp_path):
    """A bundle converted without encoders (the default) has none: Python and C both say so."""
    folder, _ = saved("tiny", "taesd")
    convert(tmp_path / "d.gguf", "f32", "d", tiny_decoder=folder, vae=saved("kl", "sd")[0])
    model = cutecpp.Model.load(tmp_path / "d.gguf")
    assert list(model.info["config"]["components"]) == ["tiny_decoder", "vae_decoder"]
    ctx = cutecpp.Context(model, threads=1)
    for method, component in ((ctx.tiny_encode, "tiny_encoder"), (ctx.vae_encode, "vae_encoder")):
        with pytest.raises(ValueError, match=f"the model has no {component}"):
            method(images(1, 8, 8))
    x = images(1, 8, 8)
    out = np.empty((1, 4, 1, 1), np.float32)
    for fn, component in ((lib.cutecpp_tiny_encode, "tiny_encoder"), (lib.cutecpp_vae_encode, "vae_encoder")):
        with pytest.raises(cutecpp.InvalidArgumentError, match=f"the model has no {component} component"):
            check(fn(ctx._handle, ffi.from_buffer("float[]", x), 1, 8, 8,
                     ffi.from_buffer("float[]", out, require_writable=True)))


def test_info_lists_the_encoders(saved, tmp_path):
    from click.testing import CliRunner

    from cutecpp.cli import cli

    convert(tmp_path / "m.gguf", "f16", "m", tiny_decoder=saved("tiny", "odd")[0], vae=saved("kl", "odd")[0],
            encoders=True)
    result = CliRunner().invoke(cli, ["info", "--model", str(tmp_path / "m.gguf")])
    assert result.exit_code == 0, result.output
    for line in ("tiny_encoder:", "vae_encoder:", "  use_quant_conv: False", "  num_blocks: [2, 0, 1]"):
        assert line in result.output.splitlines(), line
    info = cutecpp.Model.load(tmp_path / "m.gguf").info["config"]["components"]
    assert info["vae_encoder"] == {
        "in_channels": 3, "latent_channels": 3, "block_out_channels": [6, 10, 10], "layers_per_block": 3,
        "norm_num_groups": 2, "act_fn": "silu", "mid_block_add_attention": True, "use_quant_conv": False,
        "scaling_factor": pytest.approx(0.7), "shift_factor": 0.0, "latents_mean": pytest.approx([0.3, -0.2, 0.5]),
        "latents_std": pytest.approx([1.5, 0.5, 2.0]),
    }
    assert info["tiny_encoder"]["latents_std"] == pytest.approx([0.5, 2.0, 1.5])


@pytest.mark.parametrize(("kind", "key", "vtype", "value", "sub", "error", "words"), [
    ("tiny", "act_fn", STR, "silu", None, cutecpp.UnsupportedError, "unsupported value 'silu'"),
    ("tiny", "block_out_channels", ARR, [8, 8, 16, 8], U32, cutecpp.UnsupportedError, "repeated"),
    ("tiny", "num_blocks", ARR, [1, 1], U32, cutecpp.UnsupportedError, "has 2 entries"),
    ("tiny", "in_channels", U32, 5, None, cutecpp.UnsupportedError, "outside [1, 4]"),
    ("vae", "norm_num_groups", U32, 3, None, cutecpp.UnsupportedError, "not divisible by norm_num_groups 3"),
    ("vae", "use_quant_conv", U32, 1, None, cutecpp.ModelError, "use_quant_conv"),
    ("vae", "act_fn", STR, "gelu", None, cutecpp.UnsupportedError, "unsupported value 'gelu'"),
    ("vae", "latents_mean", ARR, [0.0] * 4, F32, cutecpp.UnsupportedError, "latents_std': missing"),
])
def test_bad_encoder_config_refused_naming_the_key(tmp_path, kind, key, vtype, value, sub, error, words):
    b = tiny_encoder_bundle("taesd") if kind == "tiny" else vae_encoder_bundle("sd")
    b.set(f"cutecpp.{kind}_encoder.{key}", vtype, value, sub)
    with pytest.raises(error) as info:
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))
    assert f"cutecpp.{kind}_encoder." in str(info.value) and words in str(info.value)


def test_missing_quant_conv_refused(tmp_path):
    b = vae_encoder_bundle("sd")
    del b.tensors["vae_encoder.quant_conv.weight"]
    with pytest.raises(cutecpp.ModelError, match=r"missing tensor 'vae_encoder.quant_conv.weight' \[8, 8, 1, 1\]"):
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))


@pytest.mark.parametrize(("key", "vtype", "value", "words"), [
    ("scaling_factor", F32, 0.5, "'cutecpp.tiny_encoder.scaling_factor': differs from cutecpp.tiny_decoder"),
    ("shift_factor", F32, 0.5, "'cutecpp.tiny_encoder.shift_factor': differs"),
    ("latent_channels", U32, 16, "16 differs from cutecpp.tiny_decoder.latent_channels 4"),
])
def test_encoder_and_decoder_must_share_the_latent_space(tmp_path, key, vtype, value, words):
    b = tiny_decoder_bundle("taesd")
    enc = tiny_encoder_bundle("taesd")
    b.kv.update(enc.kv)
    b.tensors.update(enc.tensors)
    from cutecpp.convert import header_keys

    b.kv.update(header_keys("pair", ["tiny_decoder", "tiny_encoder"]))
    cutecpp.Model.load(b.write(tmp_path / "ok.gguf"))
    b.set(f"cutecpp.tiny_encoder.{key}", vtype, value)
    with pytest.raises(cutecpp.UnsupportedError) as info:
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))
    assert words in str(info.value)


# --- the converter's half ----------------------------------------------------------------------------


def test_encoder_tensor_names_fit():
    """The SD VAE's layout shrunk: its encoder's shortcut names need the abbreviation to fit 63 bytes."""
    from diffusers import AutoencoderKL

    from cutecpp.bundle import tensor_name

    vae = AutoencoderKL(block_out_channels=(4, 4, 8, 8), layers_per_block=2, norm_num_groups=2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    long = "encoder.down_blocks.2.resnets.0.conv_shortcut.weight"
    assert long in vae.state_dict() and len(f"vae_encoder.{long}") == 64
    assert tensor_name("vae_encoder", long) == "vae_encoder.encoder.down_blocks.2.resnets.0.shortcut.weight"
    names = [tensor_name("vae_encoder", k) for k in vae.state_dict() if k.startswith(("encoder.", "quant_conv."))]
    assert max(len(n.encode()) for n in names) <= 63
    # Other components keep their names: the decoder's and the UNet's shortcuts are unchanged.
    decoder = "decoder.up_blocks.1.resnets.0.conv_shortcut.weight"
    assert tensor_name("vae_decoder", decoder) == f"vae_decoder.{decoder}"
    assert tensor_name("unet", "down_blocks.1.resnets.0.conv_shortcut.weight").endswith(".conv_shortcut.weight")


def test_dtype_policy_for_the_encoders(saved, tmp_path):
    convert(tmp_path / "q.gguf", "q8_0", "q", vae=saved("kl", "wide")[0], tiny_decoder=saved("tiny", "taesd")[0],
            encoders=True)
    # The converter's policy, restated: 1-D tensors f32; q8_0 where the last (torch) dim holds whole
    # 32-value blocks, else f16 (every conv kernel).
    stored = {t.name: (t.tensor_type.name, tuple(int(d) for d in reversed(t.shape)))
              for t in GGUFReader(tmp_path / "q.gguf").tensors if t.name.startswith(("tiny_encoder.", "vae_encoder."))}
    assert len(stored) > 50
    for name, (kind, shape) in stored.items():
        expected = "F32" if len(shape) == 1 else "Q8_0" if shape[-1] % 32 == 0 else "F16"
        assert kind == expected, name
    assert {kind for kind, _ in stored.values()} == {"F32", "F16", "Q8_0"}


def test_converter_refuses_unsupported_encoder_settings(saved):
    tiny = json.loads((saved("tiny", "taesd")[0] / "config.json").read_text())
    with pytest.raises(ConvertError, match="encoder_block_out_channels"):
        tiny_encoder_keys({**tiny, "encoder_block_out_channels": [8, 8, 16, 8]})
    with pytest.raises(ConvertError, match="num_encoder_blocks"):
        tiny_encoder_keys({**tiny, "num_encoder_blocks": [1, 1]})
    with pytest.raises(ConvertError, match="act_fn"):
        tiny_encoder_keys({**tiny, "act_fn": "silu"})
    kl = json.loads((saved("kl", "sd")[0] / "config.json").read_text())
    with pytest.raises(ConvertError, match="down_block_types"):
        vae_encoder_keys({**kl, "down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]})
    with pytest.raises(ConvertError, match="down_block_types.*one entry per"):
        vae_encoder_keys({**kl, "down_block_types": ["DownEncoderBlock2D"]})
    # The decoder-only settings do not matter to the encoder.
    assert vae_encoder_keys({**kl, "use_post_quant_conv": False, "up_block_types": ["X"]}) == vae_encoder_keys(kl)


def test_encoders_are_opt_in(saved, tmp_path):
    folder = saved("kl", "sd")[0]
    convert(tmp_path / "plain.gguf", "f16", "m", vae=folder)
    convert(tmp_path / "again.gguf", "f16", "m", vae=folder, encoders=False)
    assert (tmp_path / "plain.gguf").read_bytes() == (tmp_path / "again.gguf").read_bytes()
    assert all(t.name.startswith("vae_decoder.") for t in GGUFReader(tmp_path / "plain.gguf").tensors)
    convert(tmp_path / "both.gguf", "f16", "m", vae=folder, encoders=True)
    prefixes = {t.name.split(".")[0] for t in GGUFReader(tmp_path / "both.gguf").tensors}
    assert prefixes == {"vae_decoder", "vae_encoder"}
    with pytest.raises(ConvertError, match="encoders need an autoencoder"):
        convert(tmp_path / "x.gguf", "f16", "m", alignment=tmp_path, encoders=True)
