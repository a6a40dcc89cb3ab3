"""tools/set_sampling.py and cutecpp.convert.copy_with_sampling: another sampling recipe, the same networks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from bundles import with_sampling
from gguf import GGUFReader

import cutecpp
from cutecpp.convert import ConvertError, copy_with_sampling

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import set_sampling  # noqa: E402


@pytest.fixture()
def source(micro, tmp_path) -> Path:
    return with_sampling(micro, "flow3").write(tmp_path / "source.gguf")


def tensors(path: Path) -> dict[str, tuple[int, bytes]]:
    return {t.name: (int(t.tensor_type), t.data.tobytes()) for t in GGUFReader(path).tensors}


def test_copy_changes_only_the_sampling_and_the_id(source, tmp_path):
    out = tmp_path / "copy.gguf"
    copy_with_sampling(source, out, "copy-1", {"guidance_max_sigma": 0.85, "default_steps": 12}, name="the copy")
    before, after = cutecpp.Model.load(source), cutecpp.Model.load(out)
    assert after.sampling == dict(before.sampling, guidance_max_sigma=np.float32(0.85), default_steps=12)
    assert after.info["config"]["model_id"] == "copy-1" and after.info["config"]["name"] == "the copy"
    assert tensors(out) == tensors(source)
    strip = ("model_id", "name", "sampling")
    assert ({k: v for k, v in after.info["config"].items() if k not in strip}
            == {k: v for k, v in before.info["config"].items() if k not in strip})
    back = tmp_path / "back.gguf"
    copy_with_sampling(out, back, "copy-2", {"guidance_max_sigma": None, "default_steps": 20})
    assert cutecpp.Model.load(back).sampling == before.sampling
    assert tensors(back) == tensors(source)


def test_copy_refusals(micro, source, tmp_path):
    out = tmp_path / "out.gguf"
    with pytest.raises(ConvertError, match="unknown sampling setting.*eta"):
        copy_with_sampling(source, out, "x", {"eta": 0.0})
    with pytest.raises(ConvertError, match="default_cfg: only an optional setting"):
        copy_with_sampling(source, out, "x", {"default_cfg": None})
    with pytest.raises(ConvertError, match="has no sampling section"):
        copy_with_sampling(micro.write(tmp_path / "plain.gguf"), out, "x", {"guidance_max_sigma": 0.5})
    with pytest.raises(cutecpp.FileError, match="no such file"):
        copy_with_sampling(tmp_path / "missing.gguf", out, "x", {"guidance_max_sigma": 0.5})
    out.write_bytes(b"keep me")
    with pytest.raises(ConvertError, match="loader refuses the converted bundle.*guidance_max_sigma"):
        copy_with_sampling(source, out, "x", {"guidance_max_sigma": -1.0})
    assert out.read_bytes() == b"keep me"  # a refused copy leaves the output as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gguf", "plain.gguf", "source.gguf"]


def test_cli(source, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert set_sampling.main([str(source), str(out), "--model-id", "cli-1", "--set", "guidance_max_sigma=0.5",
                              "--set", "default_sampler=flow_euler"]) == 0
    assert cutecpp.Model.load(out).sampling["guidance_max_sigma"] == 0.5
    assert "cli-1" in capsys.readouterr().out
    assert set_sampling.main([str(out), str(out), "--model-id", "cli-2", "--unset", "guidance_max_sigma"]) == 0
    assert "guidance_max_sigma" not in cutecpp.Model.load(out).sampling
    capsys.readouterr()
    assert set_sampling.main([str(tmp_path / "none.gguf"), str(out), "--model-id", "x", "--set",
                              "default_steps=3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    for bad in (["--set", "default_steps=many"], ["--set", "steps=3"], ["--unset", "default_cfg"], []):
        with pytest.raises(SystemExit) as exc:
            set_sampling.main([str(source), str(out), "--model-id", "x", *bad])
        assert exc.value.code == 2
