"""A line on stderr while a long command is otherwise silent, so that nobody waits on a quiet terminal.

``with Heartbeat("icmlm-eval grounding"):`` prints ``icmlm-eval grounding: working, 12 s so far`` whenever
nothing was written to stdout or stderr for ``every`` seconds; a command that shows its own progress bar (tqdm
writes to stderr) or log lines gets no extra line.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

__all__ = ["Heartbeat"]


class _Watched:
    """A text stream that records when it was last written to (everything else is the stream's own)."""

    def __init__(self, stream: TextIO, beat: Heartbeat) -> None:
        self._stream, self._beat = stream, beat

    def write(self, text: str) -> int:
        if text:
            self._beat.last = time.monotonic()
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class Heartbeat:
    """Context manager: a daemon thread prints ``<what>: working, N s so far`` after ``every`` silent seconds."""

    def __init__(self, what: str, every: float = 5.0) -> None:
        self.what, self.every = what, every
        self.start = self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._saved: tuple[TextIO, TextIO] | None = None

    def __enter__(self) -> Heartbeat:
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Watched(sys.stdout, self), _Watched(sys.stderr, self)  # type: ignore[assignment]
        self.start = self.last = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved

    def _run(self) -> None:
        err = self._saved[1] if self._saved else sys.stderr
        while not self._stop.wait(min(0.5, self.every / 4)):
            now = time.monotonic()
            if now - self.last >= self.every:
                self.last = now
                err.write(f"{self.what}: working, {now - self.start:.0f} s so far\n")
                err.flush()
