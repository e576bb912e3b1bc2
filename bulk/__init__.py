"""Bulk scoring on Ray Data: a file of texts in, the same rows scored out.

`bulk.pipeline.score` is the pipeline, `python -m bulk score` its command line.
"""
