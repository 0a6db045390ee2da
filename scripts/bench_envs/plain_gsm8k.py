"""Baseline for ``scripts/bench_overhead.py``: plain GSM8K, no ExIt.

The same data loading as ``self_improve.load_environment`` (full train and
test splits of the bundled GSM8K, the same system prompt) and one exact
correctness reward, so that the benchmark's wall-time ratio isolates what the
ExIt hook and its rubric add. vf-eval imports it by module name: put this
folder on ``PYTHONPATH`` and pass ``plain_gsm8k`` (or ``plain-gsm8k``) as the env id.
"""

from __future__ import annotations

import verifiers as vf

from self_improve import gsm8k_data
from self_improve.scoring.answer_check import is_correct


def load_environment(seed: int = 0) -> vf.SingleTurnEnv:
    """A ``vf.SingleTurnEnv`` over GSM8K scored by exact answer equivalence (``seed`` as in self-improve, 0)."""
    parser = vf.Parser()

    def correct_answer(parser: vf.Parser, completion: vf.Messages, answer: str) -> float:
        return float(is_correct(parser.parse_answer(completion) or "", answer))

    return vf.SingleTurnEnv(
        dataset=gsm8k_data.build_split("train", seed=seed),
        eval_dataset=gsm8k_data.build_split("test", seed=seed),
        parser=parser,
        rubric=vf.Rubric(funcs=[correct_answer], parser=parser),
    )
