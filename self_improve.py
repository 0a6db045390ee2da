"""self-improve: ExIt (Exploratory Iteration) on GSM8K for verifiers.

``vf-eval self-improve`` imports this module, whichever verifiers is installed:

* classic verifiers (0.1.14 - 0.3.x; prime-rl up to v0.8.0): ``load_environment``
  builds ``classic_env.ExitEnv``, a ``vf.SingleTurnEnv`` with the per-group hook;
* verifiers 0.4 (v1 only; prime-rl main): the module exports the v1 taskset and
  the v1 env of ``v1_env`` in ``__all__``, one episode per ExIt group.

Both drive the same host-free loop, ``exit_loop.ExitLoop``.
"""

from __future__ import annotations

import verifiers as vf

if hasattr(vf, "SingleTurnEnv"):
    from classic_env import ExitEnv, RolloutFailed, input_task, load_environment, rewrite_input

    __all__ = ["ExitEnv", "RolloutFailed", "input_task", "load_environment", "rewrite_input"]
else:  # verifiers >= 0.4 ships only verifiers.v1
    from v1_env import *  # noqa: F403
    from v1_env import __all__  # noqa: F401
