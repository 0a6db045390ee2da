"""One instance's chain (``show ID``): the question, each iterate y^0..y^k with its correctness, and the
parent links back to the base task.

An instance holds its whole chain: a group started from instance P answers P's latest iterate, and
each of its responses enters the buffer as a child holding P's iterates plus the response, with
``parent_id`` P. So the iterates y^0..y^j of an instance of depth k are those of its ancestor at depth
j; the parent links say which of those ancestors the buffer still holds (a full buffer evicts the
lowest scores). The buffer does not record whether a step was an improve or a diverge prompt; the
run's results.jsonl does (``info.step``).
"""

from __future__ import annotations

import re
from typing import Any

from self_improve.grouping import Instance
from self_improve.viewer.config import ViewerError
from self_improve.viewer.snapshot import BufferSnapshot
from self_improve.viewer.summary import correctness, probabilities


def ancestors(snapshot: BufferSnapshot, instance: Instance) -> list[dict[str, Any]]:
    """The parent links from ``instance`` back to its base task: one entry per parent id, nearest first,
    each saying whether the buffer still holds it (the walk stops at the first one it does not)."""
    links: list[dict[str, Any]] = []
    seen = {instance.instance_id}
    parent_id = instance.parent_id
    while parent_id is not None and parent_id not in seen:
        seen.add(parent_id)
        parent = snapshot.get(parent_id)
        links.append({"instance_id": parent_id, "held": parent is not None,
                      "depth": None if parent is None else parent.depth,
                      "score": None if parent is None else parent.score})
        if parent is None:
            break
        parent_id = parent.parent_id
    return links


def chain(snapshot: BufferSnapshot, instance_id: int, kappa: float | None = None) -> dict[str, Any]:
    """Everything ``show ID`` prints, as a dict; ``ViewerError`` naming the id when the buffer does not hold it."""
    instance = snapshot.get(instance_id)
    if instance is None:
        held = sorted(i.instance_id for i in snapshot.instances)
        span = f"ids {held[0]}..{held[-1]}" if held else "no instance"
        raise ViewerError(f"show ID: instance {instance_id} is not in {snapshot.source} (it holds {len(held)}: {span}; "
                          "an evicted instance is gone)")
    slot = snapshot.instances.index(instance)
    chance = probabilities(snapshot, snapshot.kappa if kappa is None else kappa)
    return {"instance_id": instance.instance_id, "task_id": instance.task.task_id, "question": instance.task.question,
            "answer": instance.task.answer, "score": instance.score, "probability": float(chance[slot]),
            "depth": instance.depth, "times_sampled": instance.times_sampled, "created_step": instance.created_step,
            "scored_step": instance.scored_step, "correctness": correctness(instance),
            "iterates": [{"k": k, "correct": flag, "text": text}
                         for k, (text, flag) in enumerate(zip(instance.iterates, instance.iterate_correct,
                                                              strict=True))],
            "parents": ancestors(snapshot, instance)}


def cut(text: str, width: int) -> str:
    """``text`` on one line, whitespace collapsed, at most ``width`` characters (``...`` marks a cut)."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= width else flat[: max(width - 3, 0)] + "..."


def format_chain(found: dict[str, Any], width: int) -> str:
    """The chain as plain text, iterates cut to ``width`` characters."""
    lines = [f"instance {found['instance_id']}  task {found['task_id']}  depth {found['depth']}  "
             f"score {found['score']:.4f}  P {found['probability']:.2%}  sampled {found['times_sampled']}  "
             f"created at step {found['created_step']}, scored at step {found['scored_step']}",
             f"question: {cut(found['question'], width)}",
             f"answer:   {found['answer']}"]
    if not found["iterates"]:
        lines.append("no iterates: a learnability-curriculum instance holds the question only")
    for iterate in found["iterates"]:
        verdict = "right" if iterate["correct"] else "wrong"
        lines.append(f"  y^{iterate['k']} {verdict:5}  {cut(iterate['text'], width)}")
    links = [f"{found['instance_id']} (depth {found['depth']})"]
    for parent in found["parents"]:
        links.append(f"{parent['instance_id']} (depth {parent['depth']}, score {parent['score']:.4f})" if parent["held"]
                     else f"{parent['instance_id']} (no longer held)")
    broken = bool(found["parents"]) and not found["parents"][-1]["held"]
    links.append(f"{'... ' if broken else ''}base task {found['task_id']}")
    lines.append("parents: " + " <- ".join(links))
    return "\n".join(lines)
