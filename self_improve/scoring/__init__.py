"""What a response earns: exact answer checking (``answer_check`` with its math-verify worker
pool, ``symbolic_pool``), the rubric (``rewards``) and the diversity bonus of Eq. 6 (``diversity``)."""
