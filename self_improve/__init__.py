"""self-improve: ExIt (Exploratory Iteration) on GSM8K for verifiers.

``vf-eval self-improve`` and prime-rl import this package, whichever verifiers is installed:

* classic verifiers (0.1.14 - 0.3.x; prime-rl up to v0.8.0) calls ``load_environment``,
  which builds ``hosts.classic.ExitEnv``, a ``vf.SingleTurnEnv`` with the per-group hook;
* verifiers v1 (0.4; prime-rl main, whose 0.3.1 dev builds carry both APIs) takes the
  taskset and env this package exports in ``__all__``, from ``hosts.v1_env``: one episode
  is one ExIt group.

Every name resolves on first use, so ``import self_improve.<anything>`` imports no
verifiers, and a classic run never pays for v1. Both hosts drive the same host-free
loop, ``exit_loop.ExitLoop``.

Layout: the loop, its config and values at the top (``exit_loop``, ``exit_config``,
``grouping``, ``prompts``, ``gsm8k_data``); ``buffer/`` the stores; ``scoring/`` answer
checking, the rubric and the diversity bonus; ``hosts/`` the verifiers adapters;
``kstep/``, ``local/`` and ``viewer/`` the three command-line tools.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ChatHarness",
    "ChatHarnessConfig",
    "ExitEnv",
    "ExitEnvConfig",
    "SelfImproveData",
    "SelfImproveTask",
    "SelfImproveTaskConfig",
    "SelfImproveTaskset",
    "SelfImproveTasksetConfig",
]
"""The v1 names, ``hosts.v1_env.__all__`` (a v1 test holds the two lists equal)."""


def __getattr__(name: str) -> Any:
    if name == "load_environment":
        import verifiers as vf

        if hasattr(vf, "SingleTurnEnv"):  # the classic API (gone in verifiers 0.4)
            from self_improve.hosts.classic import load_environment

            return load_environment
    elif name in __all__:
        from self_improve.hosts import v1_env

        return getattr(v1_env, name)
    raise AttributeError(f"module 'self_improve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__, "load_environment"])
