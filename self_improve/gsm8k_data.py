"""GSM8K as verifiers-ready ``datasets.Dataset`` objects.

The bundled copy (``self_improve/data/``) is the default so that nothing is
fetched at run time; ``dataset_name`` loads any ``datasets`` source instead
(the hub's ``openai/gsm8k``, or a local folder of JSONL files) with the same
``question`` / ``answer`` columns.

Each row becomes: ``prompt`` (system + question messages from ``prompts``),
``answer`` (the gold number after ``####``), ``info`` (``task_id``,
``question``), so the ExIt hook can rebuild any self-iteration prompt from the
row alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import Dataset, load_dataset

from self_improve import prompts

DATA_DIR: Path = Path(__file__).resolve().parent / "data"
SPLITS: tuple[str, ...] = ("train", "test")


def gold_number(answer: str) -> str:
    """The final number of a GSM8K solution, thousands separators removed."""
    return answer.split("####")[-1].strip().replace(",", "")


def load_raw(split: str, dataset_name: str | None = None, dataset_config: str | None = "main") -> Dataset:
    """GSM8K rows with ``question`` and ``answer`` columns, from the bundled copy or ``dataset_name``."""
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")
    if dataset_name is None:
        return load_dataset("json", data_files=str(DATA_DIR / f"gsm8k_{split}.jsonl.gz"), split="train")
    return load_dataset(dataset_name, dataset_config, split=split)


def build_split(
    split: str,
    num_examples: int = -1,
    seed: int = 0,
    dataset_name: str | None = None,
    dataset_config: str | None = "main",
    system_prompt: str = prompts.SYSTEM_PROMPT,
) -> Dataset:
    """A formatted split; ``num_examples`` > 0 takes a seeded random subset (-1 = all),
    kept in file order; ``task_id`` is always the row's index in the full split."""
    raw = load_raw(split, dataset_name, dataset_config)
    missing = {"question", "answer"} - set(raw.column_names)
    if missing:
        raise ValueError(f"dataset_name: {dataset_name!r} split {split!r} lacks columns {sorted(missing)}")
    rows = list(range(len(raw)))
    if 0 < num_examples < len(raw):
        rows = sorted(np.random.default_rng(seed).permutation(len(raw))[:num_examples].tolist())
        raw = raw.select(rows)

    def format_row(row: dict, position: int) -> dict:
        return {
            "prompt": prompts.base_messages(row["question"], system_prompt),
            "answer": gold_number(row["answer"]),
            "info": {"task_id": f"{split}-{rows[position]}", "question": row["question"]},
        }

    return raw.map(format_row, with_indices=True, remove_columns=raw.column_names)
