"""neural-reg: the orchestration of the pipeline (settings, database server, workflow, command line, demo, reports).

The computation lives in ``pipeline/`` (no database), the data model in ``schemas/``; this package joins them.
"""
