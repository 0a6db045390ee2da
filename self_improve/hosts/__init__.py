"""The verifiers adapters around the host-free loop: classic verifiers (``classic``) and
verifiers v1 (``v1_taskset``, ``v1_env``)."""
