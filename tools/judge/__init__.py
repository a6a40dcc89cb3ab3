"""The attribute judge behind tools/eval_quality.py: a small CNN that reads a picture back into the
dataset's labels (animals, count, items and their colours, place, mood, light), plus picture-level
layout measures (subject centred, background clean). docs/eval.md describes it."""
