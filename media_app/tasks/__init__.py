"""Celery tasks, thin: each loads its rows by ID, tolerates them being gone, calls one service.

One module per area; importing them here is what `autodiscover_tasks()` finds.
"""
from . import thumbnails  # noqa: F401,E402
from . import maintenance  # noqa: F401,E402
