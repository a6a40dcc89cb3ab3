"""`eval_quality.py compare`: two score runs paired picture by picture (tools/judge/compare.py), on
hand-made score rows whose gains and losses are known."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import eval_quality  # noqa: E402
from judge import compare  # noqa: E402


def row(index: int, animal: bool, items: dict[str, bool], place: bool = True, model: str = "m") -> dict:
    return {"index": index, "prompt": f"p{index}", "seed": index % 3, "settings": {"model": model},
            "check": {"animal": animal, "count": True, "items": items, "place": place, "expression": None,
                      "light": None, "centred": True, "clean": None}}


def test_pairs_count_gains_losses_and_sign_z():
    old = [row(0, True, {"hat": False, "bow": True}), row(1, False, {"hat": False}),
           row(2, True, {"cake": False}), row(3, True, {})]
    new = [row(0, True, {"hat": True, "bow": True}), row(1, True, {"hat": True}),
           row(2, False, {"cake": True}), row(3, True, {})]
    res = compare.compare(old, new)
    acc = res["accessory"]
    assert (acc["asked"], acc["old"], acc["new"], acc["gained"], acc["lost"]) == (4, 1, 4, 3, 0)
    assert acc["sign_z"] == pytest.approx(math.sqrt(3))
    an = res["animal"]
    assert (an["asked"], an["old"], an["new"], an["gained"], an["lost"]) == (4, 3, 3, 1, 1)
    assert an["sign_z"] == 0 and an["z"] == 0
    assert "clean" not in res and "expression" not in res  # never asked: left out, not counted as missed
    assert res["place"]["gained"] == res["place"]["lost"] == 0
    # the row order of a file does not matter: pairs are by picture
    assert compare.compare(old, list(reversed(new))) == res


def test_items_are_also_pooled_by_slot():
    # hat is worn on the head, bow too; cake is held in a hand (the vocabulary's slots)
    old = [row(0, True, {"hat": False, "bow": True}), row(1, True, {"cake": True})]
    new = [row(0, True, {"hat": True, "bow": True}), row(1, True, {"cake": False})]
    res = compare.compare(old, new)
    head, hand = res["accessory:head"], res["accessory:hand"]
    assert (head["asked"], head["old"], head["new"], head["gained"], head["lost"]) == (2, 1, 2, 1, 0)
    assert (hand["asked"], hand["old"], hand["new"], hand["gained"], hand["lost"]) == (1, 1, 0, 0, 1)
    assert res["accessory"]["asked"] == head["asked"] + hand["asked"]
    assert list(res)[:4] == ["animal", "accessory", "accessory:head", "accessory:hand"]  # most asked first
    assert "  head" in compare.table(res)
    # an item id the vocabulary no longer has (a score file from an older one) is pooled as "other"
    res = compare.compare([row(0, True, {"retired_item": False})], [row(0, True, {"retired_item": True})])
    assert res["accessory:other"]["gained"] == 1


def test_two_proportion_z_matches_the_formula():
    old = [row(i, i < 5, {}) for i in range(10)]
    new = [row(i, i < 8, {}) for i in range(10)]
    p = 13 / 20
    expected = (0.8 - 0.5) / math.sqrt(2 * p * (1 - p) / 10)
    assert compare.compare(old, new)["animal"]["z"] == pytest.approx(expected)


def test_refuses_runs_over_other_pictures():
    with pytest.raises(ValueError, match="different pictures"):
        compare.compare([row(0, True, {})], [row(1, True, {})])
    with pytest.raises(ValueError, match="twice"):
        compare.compare([row(0, True, {}), row(0, True, {})], [row(0, True, {})])
    with pytest.raises(ValueError, match="asked different things"):
        compare.compare([row(0, True, {"hat": True})], [row(0, True, {"bow": True})])


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_cli_joins_files_and_reports_errors(tmp_path, capsys):
    a1 = write(tmp_path / "a1.jsonl", [row(0, False, {"hat": False}, model="old-model")])
    a2 = write(tmp_path / "a2.jsonl", [row(1, True, {"hat": True}, model="old-model")])
    b = write(tmp_path / "b.jsonl", [row(0, True, {"hat": True}, model="new-model"),
                                     row(1, True, {"hat": False}, model="new-model")])
    assert eval_quality.main(["compare", "--old", a1, a2, "--new", b, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["accessory"]["gained"] == 1 and res["accessory"]["lost"] == 1
    assert res["animal"]["gained"] == 1 and res["animal"]["lost"] == 0

    assert eval_quality.main(["compare", "--old", a1, a2, "--new", b]) == 0
    out = capsys.readouterr().out
    assert "old-model" in out and "new-model" in out and "accessory" in out

    assert eval_quality.main(["compare", "--old", a1, "--new", b]) == 1
    assert "different pictures" in capsys.readouterr().err
    assert eval_quality.main(["compare", "--old", str(tmp_path / "missing.jsonl"), "--new", b]) == 1
    assert "missing.jsonl" in capsys.readouterr().err
