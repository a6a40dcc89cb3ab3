"""A corpus of corrupted bundles for the sanitizer run and the fuzzer's seeds.

    python tests/corpus.py OUTDIR [--count N]

Mutations aim at the structure ggml's reader and cutecpp's validator walk:
every count, length, type, dimension and offset field of the header (found
with gguf's own reader), truncations, and random byte damage in the header.
"""

from __future__ import annotations

import random
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

from gguf import GGUFReader

INTERESTING_U64 = [0, 1, 2, 3, 7, 8, 63, 64, 255, 4096, 1 << 31, 1 << 32, (1 << 32) - 1, 1 << 62,
                   (1 << 63) - 1, (1 << 64) - 1]
INTERESTING_U32 = [0, 1, 2, 3, 4, 5, 12, 13, 30, 31, 255, 0x7FFFFFFF, 0xFFFFFFFF]


def header_fields(data: bytes, path: Path) -> list[tuple[int, int]]:
    """(offset, size) of every scalar field in the header: lengths, types, counts, dims, offsets."""
    reader = GGUFReader(path)
    fields: list[tuple[int, int]] = [(4, 4), (8, 8), (16, 8)]
    for field in list(reader.fields.values()) + [t.field for t in reader.tensors]:
        pos = field.offset
        for part in field.parts:
            size = part.dtype.itemsize
            if size in (4, 8):
                fields.extend((pos + k * size, size) for k in range(part.size))
            pos += part.nbytes
    return sorted(set(f for f in fields if f[0] + f[1] <= len(data)))


def header_end(path: Path) -> int:
    return GGUFReader(path).data_offset


def mutations(valid: bytes, path: Path, count: int, seed: int = 0) -> Iterator[tuple[str, bytes, bool]]:
    """Yields (name, bytes, must_fail). must_fail is True where the damage is structural."""
    rng = random.Random(seed)
    fields = header_fields(valid, path)
    end = header_end(path)
    reader = GGUFReader(path)
    last = reader.tensors[-1]
    needed = end + int(last.data_offset - reader.data_offset) + int(last.n_bytes)
    made = 0
    while made < count:
        kind = made % 4
        if kind == 0:  # truncation: anywhere, header-heavy
            cut = rng.randrange(0, end) if rng.random() < 0.7 else rng.randrange(end, len(valid))
            yield f"truncate-{cut}", valid[:cut], cut < needed
        elif kind == 1:  # a header field set to an interesting value
            off, size = rng.choice(fields)
            value = rng.choice(INTERESTING_U64 if size == 8 else INTERESTING_U32)
            fmt = "<Q" if size == 8 else "<I"
            yield f"field-{off}-{value}", valid[:off] + struct.pack(fmt, value) + valid[off + size:], False
        elif kind == 2:  # a header field plus or minus a little
            off, size = rng.choice(fields)
            fmt = "<Q" if size == 8 else "<I"
            (value,) = struct.unpack_from(fmt, valid, off)
            value = (value + rng.choice([-2, -1, 1, 2, 1000])) % (1 << (8 * size))
            yield f"nudge-{off}-{value}", valid[:off] + struct.pack(fmt, value) + valid[off + size:], False
        else:  # random bytes of damage in the header
            data = bytearray(valid)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(0, end)] = rng.randrange(256)
            yield f"bytes-{made}", bytes(data), False
        made += 1


def write_corpus(valid_path: Path, out_dir: Path, count: int) -> list[tuple[Path, bool]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    valid = valid_path.read_bytes()
    written = []
    for i, (name, data, must_fail) in enumerate(mutations(valid, valid_path, count)):
        path = out_dir / f"{i:04d}-{name}.gguf"
        path.write_bytes(data)
        written.append((path, must_fail))
    return written


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bundles import full_bundle, unet_bundle

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, default=400)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for base, bundle in [("micro", unet_bundle("micro")), ("full", full_bundle())]:
        valid_path = bundle.write(args.out_dir / f"valid-{base}.gguf")
        written += 1 + len(write_corpus(valid_path, args.out_dir / base, args.count // 2))
    print(f"wrote {written} files under {args.out_dir}")
