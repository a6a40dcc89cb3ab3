"""The loader's tensor inventory matches real diffusers UNet2DConditionModels."""

import numpy as np
import pytest
from bundles import UNET_CONFIGS, make_unet, unet_bundle

import cutecpp


@pytest.mark.parametrize("name", sorted(UNET_CONFIGS))
@pytest.mark.parametrize("f16", [False, True], ids=["f32", "f16"])
def test_diffusers_unet_loads(name, f16, tmp_path):
    bundle = unet_bundle(name, f16=f16)
    path = bundle.write(tmp_path / f"{name}.gguf")
    info = cutecpp.Model.load(path).info

    state = make_unet(name).state_dict()
    assert info["n_tensors"] == len(state)
    assert info["n_params"] == sum(t.numel() for t in state.values())
    assert info["file_size"] == path.stat().st_size

    dtypes = info["dtypes"]
    if f16:
        n_1d = sum(1 for a in bundle.tensors.values() if a.ndim == 1)
        assert dtypes["f32"]["tensors"] == n_1d
        assert dtypes["f16"]["tensors"] == len(state) - n_1d
    else:
        assert set(dtypes) == {"f32"}
        assert dtypes["f32"]["bytes"] == 4 * info["n_params"]

    unet = info["config"]["components"]["unet"]
    config = UNET_CONFIGS[name]
    assert unet["block_out_channels"] == list(config["block_out_channels"])
    has_mid = config.get("mid_block_type", "UNetMidBlock2DCrossAttn") is not None
    assert unet["mid_block_type"] == ("UNetMidBlock2DCrossAttn" if has_mid else "none")
    assert unet["use_linear_projection"] == config.get("use_linear_projection", False)
    assert np.isclose(unet["norm_eps"], 1e-5)


def test_read_without_mmap(micro_path):
    a = cutecpp.Model.load(micro_path, mmap=True).info
    b = cutecpp.Model.load(micro_path, mmap=False).info
    assert a["mmap"] is True and b["mmap"] is False
    assert {k: v for k, v in a.items() if k != "mmap"} == {k: v for k, v in b.items() if k != "mmap"}


def test_model_shared_between_threads(micro_path):
    from concurrent.futures import ThreadPoolExecutor

    model = cutecpp.Model.load(micro_path)
    with ThreadPoolExecutor(4) as pool:
        infos = list(pool.map(lambda _: model.info["n_tensors"], range(64)))
    assert set(infos) == {208}
