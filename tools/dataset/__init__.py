"""The dataset maker's parts (see tools/make_dataset.py and docs/dataset.md)."""
