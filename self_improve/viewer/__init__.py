"""``self-improve-buffer``: a read-only view of what an ExIt buffer holds and how it got there.

Modules, one concept each:

- ``config``: the command's settings (``ViewerConfig``), one flag per field;
- ``snapshot``: a buffer checkpoint file or a live Redis store, read as one consistent ``BufferSnapshot``;
- ``runlog``: the groups of one or more vf-eval ``results.jsonl`` files, in the order they finished;
- ``summary``: the numbers of a snapshot or a run, and their terminal text;
- ``lineage``: one instance's chain of iterates back to its base task (``show ID``);
- ``plots``: the paper's Figs. 6 and 7 and the buffer's score histogram, as PNGs;
- ``export``: JSON and CSV for notebooks;
- ``simulated``: a buffer and a results.jsonl from the simulated learner, for comparison pictures;
- ``cli``: the command line.

Usage and how to read the figures: docs/curriculum-viewer.md.
"""
