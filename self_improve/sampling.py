"""Sampling defaults shared by the command-line tools (``self-improve-local``, ``self-improve-kstep``)."""

from __future__ import annotations

MAX_TOKENS: int = 768
"""Response length limit: lets most answers of the built-in 1.5B model reach ``\\boxed{}``."""

TEMPERATURE: float = 0.7
"""Sampling temperature: enough spread for groups that are neither all right nor all wrong."""
