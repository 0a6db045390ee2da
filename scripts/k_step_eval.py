"""K-step self-improvement evaluation; the same as the ``self-improve-kstep`` console script.

Run from a checkout without installing: ``python scripts/k_step_eval.py -n 50 -K 4``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from self_improve.kstep.cli import main  # noqa: E402  (after the path set-up above)

if __name__ == "__main__":
    raise SystemExit(main())
