"""A contact sheet of scored pictures: each with its prompt underneath (Chinese if a CJK font is
installed, else the picture's English caption) and, in red, every attribute the judge found missing
(a green "ok" when none is). A red or green bar on each picture's top edge repeats the verdict."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

CELL, COLS, CAPTION_H = 192, 8, 58
RED, GREEN, INK = (200, 30, 30), (30, 140, 60), (40, 40, 40)


def contact_sheet(rows: list[dict], pictures: list[Image.Image], out: Path, cell: int = CELL,
                  cols: int = COLS) -> Path:
    from make_dataset import _cjk_font, _wrap

    n = len(pictures)
    rows_n = max(1, (n + cols - 1) // cols)
    sheet = Image.new("RGB", (cols * cell, rows_n * (cell + CAPTION_H)), "white")
    draw = ImageDraw.Draw(sheet)
    zh_font = _cjk_font(15)
    font = zh_font or ImageFont.load_default(13)
    if zh_font is None:
        print("no CJK font installed (fc-list :lang=zh is empty): writing the English captions", file=sys.stderr)
    for k, (row, img) in enumerate(zip(rows, pictures, strict=True)):
        x, y = (k % cols) * cell, (k // cols) * (cell + CAPTION_H)
        sheet.paste(img.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS), (x, y))
        failed = row["check"]["failed"]
        draw.rectangle((x, y, x + cell - 1, y + 3), fill=RED if failed else GREEN)
        text = row["prompt"] if zh_font else row["english"]
        for j, line in enumerate(_wrap(text, draw, font, cell - 6, 2)):
            draw.text((x + 3, y + cell + 2 + 16 * j), line, fill=INK, font=font)
        verdict = ("x " + ", ".join(failed)) if failed else "ok"
        line = _wrap(verdict, draw, font, cell - 6, 1)[0]
        draw.text((x + 3, y + cell + 2 + 32), line, fill=RED if failed else GREEN, font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        sheet = sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    sheet.save(out, optimize=True)
    return out
