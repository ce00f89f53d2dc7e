"""The progress interface the long-running storage services report through.

Services only count; how progress is shown (a bar on a terminal, nothing in a Celery task) is
the caller's business.
"""


class Progress:
    """Receives counts from a service. This base class ignores them (tasks, tests)."""

    def start(self, *, total: int, total_bytes: int) -> None:
        pass

    def advance(self, *, nbytes: int, items: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass
