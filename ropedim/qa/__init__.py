"""§5 on multi-document QA, as the paper's steps: the QA set (§5.1, App. B-C), answers
per query mask, head scores (Eq. 4 utility, §5.3 retrieval), masks (§5.2 Table 1, §5.4
Table 2), correctness, and the fast-vs-faithful check of the masking mode.
``study.Study`` runs them in that order for one model on one task, each cached on its own.
"""
