#!/usr/bin/env python3
"""Copy a bundle with other sampling settings (cutecpp.sampling.*) under a new model id.

    python tools/set_sampling.py IN.gguf OUT.gguf --model-id cute-mini-0.13 --set guidance_max_sigma=0.85
    python tools/set_sampling.py IN.gguf OUT.gguf --model-id X --set default_steps=12 --unset guidance_max_sigma
    python tools/set_sampling.py IN.gguf OUT.gguf --model-id X --verifier DIR --set candidates=2 --set verify_sigma=0.46

Every other key and every tensor's bytes stay as they are, so the networks draw what they drew, only
sampled another way (a new model id: the picture cache must not mix the two). Settings and their
values: docs/bundle-format.md, section `cutecpp.sampling`. The copy is loaded back with cutecpp's
loader before it replaces OUT. --verifier DIR (tools/train_verifier.py export) adds a verifier component, or
replaces the one there, for best-of-several sampling. Errors are one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cutecpp import CutecppError
from cutecpp.convert import F32, F64, SAMPLING_OPTIONAL, SAMPLING_TYPES, U32, ConvertError, copy_with_sampling


def setting(text: str) -> tuple[str, object]:
    """'default_steps=12' -> ('default_steps', 12), typed as the bundle stores it (argparse type)."""
    key, eq, value = text.partition("=")
    if not eq or key not in SAMPLING_TYPES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with KEY one of {', '.join(SAMPLING_TYPES)}")
    try:
        if SAMPLING_TYPES[key] == U32:
            return key, int(value)
        if SAMPLING_TYPES[key] in (F32, F64):
            return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the bundle to copy")
    parser.add_argument("output", type=Path, help="the copy to write")
    parser.add_argument("--model-id", required=True, help="the copy's cutecpp.model_id")
    parser.add_argument("--name", help="the copy's general.name (default: the source's)")
    parser.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                        help="a sampling setting to write (repeatable)")
    parser.add_argument("--unset", choices=SAMPLING_OPTIONAL, action="append", default=[],
                        help="an optional sampling setting to remove (repeatable)")
    parser.add_argument("--verifier", type=Path, help="a verifier folder (tools/train_verifier.py export) to add")
    parser.add_argument("--dtype", default="f16", help="the verifier's tensor type (default f16)")
    args = parser.parse_args(argv)
    if not args.set and not args.unset and args.verifier is None:
        parser.error("nothing to change: give --set KEY=VALUE, --unset KEY or --verifier DIR")
    changes = {**dict(args.set), **dict.fromkeys(args.unset)}
    try:
        copy_with_sampling(args.source, args.output, args.model_id, changes, name=args.name, verifier=args.verifier,
                           dtype=args.dtype)
    except (ConvertError, CutecppError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    added = f", verifier from {args.verifier}" if args.verifier else ""
    print(f"{args.output}: {args.model_id}, sampling " + ", ".join(f"{k}={v}" for k, v in changes.items()) + added)
    return 0


if __name__ == "__main__":
    sys.exit(main())
