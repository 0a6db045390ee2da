"""``exit_config`` itself, without an environment: each field's doc, default and
range written once (the README table is generated from them), validation errors
that name the field, the strategy presets (Table 1) and how explicit arguments
override them. ``load_environment``'s use of it is in test_load_environment.py."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from self_improve import exit_config
from self_improve.exit_config import PRESETS, ExitConfig, resolve_config

REPO = Path(__file__).resolve().parents[2]
FIELDS = {field.name: field for field in dataclasses.fields(ExitConfig)}
BOUNDED = [name for name, field in FIELDS.items() if math.isfinite(field.metadata["low"])]
"""Fields with a lower bound (sizes, probabilities, kappa, weights, the seed)."""


def test_the_readme_argument_table_is_the_one_generated_from_the_config_fields() -> None:
    readme = (REPO / "README.md").read_text()
    assert exit_config.arguments_table() in readme, (
        "README's Environment Arguments table differs from ExitConfig: paste the output of "
        "python -c 'from self_improve import exit_config; print(exit_config.arguments_table())'")


def test_every_config_field_has_a_one_line_doc_and_a_default() -> None:
    docs = exit_config.field_docs()
    for field in dataclasses.fields(exit_config.ExitConfig):
        assert field.default is not dataclasses.MISSING, field.name
        assert docs.get(field.name) and "\n" not in docs[field.name], f"{field.name} has no one-line doc"


def test_defaults_resolve_to_the_diverge_preset() -> None:
    config = resolve_config({})
    assert config.strategy == "diverge"
    assert {name: getattr(config, name) for name in PRESETS["diverge"]} == PRESETS["diverge"]


@pytest.mark.parametrize("strategy", list(PRESETS))
def test_each_preset_fills_exactly_the_arguments_left_null(strategy: str) -> None:
    config = resolve_config({"strategy": strategy})
    assert {name: getattr(config, name) for name in PRESETS[strategy]} == PRESETS[strategy]
    assert set(PRESETS[strategy]) == {name for name, field in FIELDS.items() if field.default is None
                                      and name in ("select_prob", "divergence_prob", "diversity_bonus")}


def test_an_explicit_argument_wins_over_the_preset() -> None:
    config = resolve_config({"strategy": "grpo", "select_prob": 0.25, "diversity_bonus": True})
    assert (config.select_prob, config.divergence_prob, config.diversity_bonus) == (0.25, 0.0, True)


def test_resolving_twice_changes_nothing() -> None:
    config = resolve_config({"strategy": "exit", "kappa": 2.0})
    assert config.resolved() == config


@pytest.mark.parametrize("name", BOUNDED)
def test_a_value_below_a_fields_lower_bound_is_refused_naming_the_field(name: str) -> None:
    low = FIELDS[name].metadata["low"]
    with pytest.raises(ValueError, match=f"^{name}: must be .*, got -?[0-9.]+$"):
        resolve_config({name: int(low) - 1 if isinstance(FIELDS[name].default, int) else low - 0.5})


@pytest.mark.parametrize("name", [name for name in FIELDS if math.isfinite(FIELDS[name].metadata["high"])])
def test_a_value_above_a_fields_upper_bound_is_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}: must be a number in "):
        resolve_config({name: FIELDS[name].metadata["high"] + 0.5})


def test_an_unknown_argument_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="^kapa: unknown"):
        resolve_config({"kapa": 1.0})


@pytest.mark.parametrize(("arguments", "message"), [
    ({"buffer_size": 4, "min_buffer_size": 5}, r"^min_buffer_size: must be <= buffer_size \(4\), got 5$"),
    ({"buffer_url": "redis://localhost:6379/0", "buffer_path": "b.json"}, "^buffer_path: must be null with buffer_url"),
    ({"buffer_password_var": "REDIS_PASSWORD"}, "^buffer_password_var: needs buffer_url"),
])
def test_arguments_that_contradict_each_other_are_refused_naming_one(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_config(arguments)


def test_the_table_has_one_row_per_field_in_field_order() -> None:
    rows = exit_config.arguments_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(FIELDS)
