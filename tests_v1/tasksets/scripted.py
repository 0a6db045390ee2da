"""How the scripted server answers the test tasksets' questions (not part of either taskset).

``foreign_server(policy)`` is a ``ScriptedServer`` that knows every ``exit-letters`` and
``exit-partial`` request and renders behaviours in their ``ANSWER:`` format:

* ``correct``: the gold on an ``ANSWER:`` line (reward: the maximum);
* ``partial``: the first half (rounded up) of the gold's letters (exit-partial: partial credit;
  exit-letters: wrong);
* ``wrong``: ``ANSWER: qz`` (exit-partial: coverage 0, ``answered`` 1);
* ``unboxed``: the gold in prose, no ``ANSWER:`` line (reward 0);
* anything else: ``scripted_server.render``.
"""

from __future__ import annotations

import math

import verifiers.v1 as vf
from verifiers.v1.utils.loaders import taskset_class

from scripted_server import Policy, ScriptedServer, cycle_policy, render
from self_improve import prompts

TASKSET_IDS: tuple[str, ...] = ("exit-letters", "exit-partial")


def golds() -> dict[str, str]:
    """Request text -> gold answer for every task of the test tasksets."""
    table = {}
    for taskset_id in TASKSET_IDS:
        for task in taskset_class(taskset_id)(vf.TasksetConfig(id=taskset_id)):
            table[prompts.request_text(task.data.prompt)] = task.data.answer
    return table


def render_answer(behaviour: str, gold: str, tag: str) -> str:
    """The reply text for ``behaviour`` in the ``ANSWER:`` format (see the module doc)."""
    if behaviour == "correct":
        return f"Working it out ({tag}).\nANSWER: {gold}"
    if behaviour == "partial":
        letters = gold.split(",") if "," in gold else list(gold)
        return f"Working it out ({tag}).\nANSWER: {','.join(letters[:math.ceil(len(letters) / 2)])}"
    if behaviour == "wrong":
        return f"Working it out ({tag}).\nANSWER: qz"
    if behaviour == "unboxed":
        return f"Working it out ({tag}). The answer is {gold}."
    return render(behaviour, gold, tag)


def foreign_server(policy: Policy | None = None) -> ScriptedServer:
    """A scripted server (not started) that answers the test tasksets in their format."""
    return ScriptedServer(policy=policy or cycle_policy(("correct", "wrong", "partial", "unboxed")),
                          golds=golds(), renderer=render_answer)
