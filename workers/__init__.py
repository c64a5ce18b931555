"""Celery app and thin task wrappers over the core (`orchestrator.deploy`, `orchestrator.finalize`).

Not built yet: the distributed executor is the next milestone. The core already keeps every
executor concern out of `deploy` and `finalize`, and its data objects serialise to JSON.
"""
