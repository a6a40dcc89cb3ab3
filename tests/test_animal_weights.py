"""tools/animal_weights.py: sampling weights from scored pictures, for train_unet.py --sample-weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import animal_weights  # noqa: E402


def row(animals: list[str], hit: bool) -> dict:
    return {"asked": {"animals": animals}, "check": {"animal": hit}}


def rows() -> list[dict]:
    # 40 prompts: bear missed 6 of 10, cat 2 of 10, dog 0 of 20: overall 8 of 40 = 0.2
    return ([row(["bear"], k >= 6) for k in range(10)] + [row(["cat"], k >= 2) for k in range(10)]
            + [row(["dog"], True) for _ in range(20)])


def test_weights_are_shrunk_miss_rates_over_the_overall_one():
    w, counts = animal_weights.weights(rows(), cap=4.0, prior=0.0)
    assert w == {"bear": 3.0}  # 0.6 / 0.2; the cat's 0.2 / 0.2 = 1 and the dog's 0 are not listed
    assert counts == {"bear": (10, 6), "cat": (10, 2), "dog": (20, 0)}
    assert animal_weights.weights(rows(), cap=2.0, prior=0.0)[0] == {"bear": 2.0}
    # prior 5: (6 + 5 * 0.2) / (10 + 5) / 0.2 = 2.333
    assert animal_weights.weights(rows(), cap=4.0, prior=5.0)[0] == {"bear": pytest.approx(2.333, abs=1e-3)}
    with pytest.raises(SystemExit, match="none missed"):
        animal_weights.weights([row(["dog"], True)], cap=4.0, prior=5.0)


def test_cli_writes_what_train_reads(tmp_path, capsys):
    runs = tmp_path / "run.jsonl"
    runs.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    out = tmp_path / "w.json"
    assert animal_weights.main([str(runs), "-o", str(out), "--prior", "0"]) == 0
    assert json.loads(out.read_text()) == {"bear": 3.0}
    assert "bear           missed   6 of  10  weight 3" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"asked": {}}\n')
    with pytest.raises(SystemExit):
        animal_weights.main([str(tmp_path / "bad.jsonl"), "-o", str(out)])
    assert "not eval_quality.py score output" in capsys.readouterr().err
