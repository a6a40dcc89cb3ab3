#!/usr/bin/env python3
"""Draw the README's example pictures with a model (default: the shipped one) and print their table.

    python tools/readme_pictures.py [-o docs/pictures] [--model M.gguf]

Each prompt is drawn at its listed seed with the model's default settings, so the pictures are
reproducible: running this again with the same model writes the same pixels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# (prompt, seed): the issue's own prompt, then a spread of animals, items, places and moods.
PICTURES = [
    ("小熊 穿蓝裤子 冰山上 笑", 1),
    ("小猫 戴红帽子 蘑菇屋", 7),
    ("两只小兔子 草地上", 3),
    ("小狗 拿气球 彩虹", 5),
    ("企鹅 戴围巾 雪地里", 2),
    ("小猪 穿雨靴 花园里 开心", 4),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", type=Path, default=Path("docs/pictures"))
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    import cute_mini

    from cutecpp import Pipeline, check_prompt

    for prompt, _ in PICTURES:
        check = check_prompt(prompt)
        if not check.ok:
            raise SystemExit(f"{prompt}: {check}")
    cute_mini.warn_if_installed_model_is_stale(args.model)
    pipe = Pipeline.load(args.model, threads=args.threads, cache=False)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (prompt, seed) in enumerate(PICTURES, 1):
        res = pipe.generate(prompt, seed=seed)
        path = res.save(args.out / f"{k:02d}.webp")
        print(f"{path}  {res.timings['total']:.0f} ms", file=sys.stderr)
        rows.append((prompt, seed, path))
    print("| " + " | ".join(f"![{p}]({path.as_posix()})" for p, _, path in rows) + " |")
    print("|" + "---|" * len(rows))
    print("| " + " | ".join(f"`{p}` (seed {s})" for p, s, _ in rows) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
