"""A plain-text progress bar on stderr for the storage commands (no extra dependency).

On a terminal it redraws one line; otherwise (logs, CI) it prints a line at most every few
seconds, so a long migration leaves a readable trail instead of thousands of lines.
"""
import sys
import time

from media_app.services.progress import Progress


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f}"


class ProgressBar(Progress):
    def __init__(self, label: str, stream=None, width: int = 30, unit: str = "blobs"):
        self.label, self.stream, self.width, self.unit = label, stream or sys.stderr, width, unit
        self.tty = self.stream.isatty()
        self.total = self.total_bytes = self.done = self.done_bytes = 0
        self._last = 0.0

    def start(self, *, total: int, total_bytes: int) -> None:
        self.total, self.total_bytes = total, total_bytes
        self._draw(force=True)

    def advance(self, *, nbytes: int, items: int = 1) -> None:
        self.done += items
        self.done_bytes += nbytes
        self._draw(force=self.done >= self.total)

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        fraction = self.done_bytes / self.total_bytes if self.total_bytes else (1.0 if self.done >= self.total else 0.0)
        filled = int(self.width * fraction)
        line = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {self.unit}, "
                f"{_mib(self.done_bytes)}/{_mib(self.total_bytes)} MiB ({fraction:.0%})")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()
