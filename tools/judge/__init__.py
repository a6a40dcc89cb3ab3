"""The attribute judge behind tools/eval_quality.py: a small CNN that reads a picture back into the
dataset's labels (animals, count, items and their colours, place, mood, light), plus picture-level
layout measures (subject centred, background clean). docs/eval.md describes it."""

import sys
from pathlib import Path

# The judge reads the dataset and shapes of its sibling tools (make_dataset, cute_mini).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
