"""self-improve: ExIt (Exploratory Iteration) on GSM8K for verifiers.

``vf-eval self-improve`` and prime-rl import this module, whichever verifiers is installed:

* classic verifiers (0.1.14 - 0.3.x; prime-rl up to v0.8.0) calls ``load_environment``,
  which builds ``classic_env.ExitEnv``, a ``vf.SingleTurnEnv`` with the per-group hook;
* verifiers v1 (0.4; prime-rl main, whose 0.3.1 dev builds carry both APIs) takes the
  taskset and env this module exports in ``__all__``, from ``v1_env``: one episode is
  one ExIt group. They are imported on first use, so a classic run never pays for v1.

Both drive the same host-free loop, ``exit_loop.ExitLoop``.
"""

from __future__ import annotations

from typing import Any

import verifiers as vf

if hasattr(vf, "SingleTurnEnv"):  # the classic API (gone in verifiers 0.4)
    from classic_env import load_environment  # noqa: F401

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
"""The v1 names, ``v1_env.__all__`` (a v1 test holds the two lists equal)."""


def __getattr__(name: str) -> Any:
    if name in __all__:
        import v1_env

        return getattr(v1_env, name)
    raise AttributeError(f"module 'self_improve' has no attribute {name!r}")
