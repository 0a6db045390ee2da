"""``self-improve-local``: the built-in model (weights, engine, server, command line)."""
