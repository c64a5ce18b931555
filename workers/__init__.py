"""The distributed executor on Celery: one task per deployment, and a chord callback that finalizes the run.

The work itself is the core's (`orchestrator`); the tasks only wrap it, and Flower watches them.
"""
