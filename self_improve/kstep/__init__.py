"""``self-improve-kstep``: the K-step self-improvement evaluation (config, chains, runner,
report, command line)."""
