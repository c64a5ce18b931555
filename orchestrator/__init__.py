"""tfo's core: discovery, validation, sharding, per-deployment execution, backup, rollback, audit.

Plain Python with no executor or Celery import: the same `deploy` and `finalize` run in a thread pool
and inside Celery tasks.
"""

__version__ = "0.1.0"
