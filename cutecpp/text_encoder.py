"""Per-token hidden states of a Qwen2-family GGUF, through llama.cpp (llama-cpp-python).

The states are the model's final-norm output for every token of the text, with no chat template
and no BOS: for a truncated encoder (see `encoder_build`) that is the normalised output of its
last kept block. One model per (file, threads) is loaded per process and shared.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from .errors import FileError, FormatError, InvalidArgumentError

DEFAULT_MAX_TOKENS = 64


def _check_file(path: Path) -> None:
    """Refuse what llama.cpp should never see: it reports a bad file only as 'failed to load'."""
    if not path.exists():
        raise FileError(f"{path}: no such file")
    if not path.is_file():
        raise FileError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise FileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if magic != b"GGUF":
        raise FormatError(f"{path}: not a GGUF file")


_log_callback = None
_log_state = {"last": 0}


def _install_llama_log() -> None:
    """Route llama.cpp's log through a callback that cannot fail.

    llama-cpp-python's own callback decodes each chunk as UTF-8 and raises on a chunk that splits
    a character (its traceback then lands on the CLI's stderr). Ours writes warnings and errors
    as raw bytes to fd 2 (captured around loads, see _stderr_to) and drops the rest, unless
    CUTECPP_DEBUG is set.
    """
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    def log(level: int, text: bytes, user_data) -> None:
        if level == 5:  # GGML_LOG_LEVEL_CONT: same level as the line it continues
            level = _log_state["last"]
        _log_state["last"] = level
        if text and (level >= 3 or os.environ.get("CUTECPP_DEBUG")):  # 3 WARN, 4 ERROR
            with suppress(OSError):
                os.write(2, text)

    _log_callback = llama_cpp.llama_log_callback(log)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


@contextmanager
def _stderr_to(sink) -> Iterator[None]:
    """Send fd 2 to `sink` meanwhile: llama.cpp logs load-time notes straight to stderr, which
    would break the CLI's one-line errors; the captured text is kept for error messages."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _llama_notes(sink) -> str:
    sink.seek(0)
    lines = sink.read().decode("utf-8", "replace").strip().splitlines()
    return f" (llama.cpp: {lines[-1].strip()})" if lines else ""


def vocab_tokenizer(path: str | os.PathLike[str]):
    """llama.cpp's tokenizer for a GGUF, loading its vocabulary only (no weights, no context)."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    path = Path(path)
    _check_file(path)
    _install_llama_log()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with tempfile.TemporaryFile() as sink:
        try:
            with _stderr_to(sink):
                model = LlamaModel(path_model=str(path), params=params, verbose=False)
        except ValueError:
            raise FormatError(f"{path}: llama.cpp cannot read this tokenizer{_llama_notes(sink)}") from None
    return lambda text: model.tokenize(text.encode("utf-8"), add_bos=False, special=False)


class TextEncoder:
    """A loaded encoder. `encode(text)` -> float32 `[T, hidden]`; thread-safe (one call at a time)."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        from llama_cpp import LLAMA_POOLING_TYPE_NONE, Llama

        self.path = Path(path)
        _check_file(self.path)
        if not 1 <= max_tokens <= 4096:
            raise InvalidArgumentError(f"max_tokens must be 1..4096, got {max_tokens}")
        threads = threads or len(os.sched_getaffinity(0))
        self.max_tokens = max_tokens
        _install_llama_log()
        with tempfile.TemporaryFile() as sink:
            try:
                with _stderr_to(sink):
                    self._llm = Llama(
                        model_path=str(self.path), embedding=True, pooling_type=LLAMA_POOLING_TYPE_NONE,
                        flash_attn=False, n_ctx=max_tokens, n_batch=max_tokens, n_ubatch=max_tokens,
                        n_threads=threads, n_threads_batch=threads, use_mmap=True, verbose=False,
                    )
            except ValueError:
                raise FormatError(f"{self.path}: llama.cpp cannot load this text encoder{_llama_notes(sink)}") from None
        self.threads = threads
        self.hidden_size = int(self._llm.n_embd())
        self.metadata = dict(self._llm.metadata)
        self._lock = threading.Lock()

    @property
    def n_layers(self) -> int:
        arch = self.metadata.get("general.architecture", "")
        return int(self.metadata.get(f"{arch}.block_count", 0))

    def tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def tokens_for(self, text: str | Sequence[str]) -> list[int]:
        """A string is tokenized as it is; a sequence of words one word at a time, then joined.

        Word by word is how prompts reach the encoder: each word gets the pieces it has on its own
        (the natural Chinese pieces, no space bytes), and a pruned vocabulary that covers every
        word alone covers every prompt made of them.
        """
        if isinstance(text, str):
            return self.tokenize(text)
        if not all(isinstance(w, str) for w in text):
            raise TypeError("words must be str")
        return [t for w in text for t in self.tokenize(w)]

    def encode(self, text: str | Sequence[str]) -> np.ndarray:
        """Hidden states `[T, hidden]` for a text or a sequence of words (T = 0 when empty)."""
        if not isinstance(text, (str, list, tuple)):
            raise TypeError(f"text must be str or a list of words, not {type(text).__name__}")
        tokens = self.tokens_for(text)
        if len(tokens) > self.max_tokens:
            raise InvalidArgumentError(
                f"the text needs {len(tokens)} tokens; this encoder takes at most {self.max_tokens}")
        if not tokens:
            return np.zeros((0, self.hidden_size), np.float32)
        import llama_cpp

        with self._lock:
            llm = self._llm
            if llm is None:
                raise InvalidArgumentError(f"{self.path}: this text encoder was closed")
            llm._ctx.kv_cache_clear()
            llm._batch.reset()
            llm._batch.add_sequence(tokens, 0, True)
            llm._ctx.decode(llm._batch)
            ptr = llama_cpp.llama_get_embeddings(llm._ctx.ctx)
            n = len(tokens) * self.hidden_size
            flat = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n,))
            return flat.reshape(len(tokens), self.hidden_size).copy()


    def close(self) -> None:
        """Free llama.cpp's model and context now (also done when the object is collected)."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()


_shared: dict[tuple[str, int | None, int], TextEncoder] = {}
_shared_lock = threading.Lock()


def load_text_encoder(path: str | os.PathLike[str], *, threads: int | None = None,
                      max_tokens: int = DEFAULT_MAX_TOKENS) -> TextEncoder:
    """The process-wide encoder for this file and settings, loaded on first use."""
    key = (str(Path(path).resolve()), threads, max_tokens)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = TextEncoder(key[0], threads=threads, max_tokens=max_tokens)
        return _shared[key]


@atexit.register
def _close_shared() -> None:
    """Free shared encoders before interpreter teardown, while llama_cpp can still free them."""
    with _shared_lock:
        for enc in _shared.values():
            enc.close()
        _shared.clear()
