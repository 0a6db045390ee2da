"""What a response earns: exact answer checking (``answer_check`` with its math-verify worker
pool, ``symbolic_pool``), the rules every host applies to one response (``response``: no verifiers),
the classic rubric (``rewards``) and the diversity bonus of Eq. 6 (``diversity``)."""
