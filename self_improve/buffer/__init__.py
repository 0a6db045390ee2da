"""The buffer of Algorithm 1 and where it lives: the store contract (``store``), the in-process
buffer (``exit_buffer`` over ``sum_tree``), saved states (``state``), the checkpoint file
(``checkpoint``), and the Redis store shared by many workers (``redis_buffer``, ``redis_scripts``)."""
