"""Progress on stderr: a bar on a terminal, plain lines in a log; the one place that decides which.

A bar redraws itself with carriage returns.  On a terminal that is what a
person wants; in a redirected log (``2> run.log``, ``| tee``, CI) every redraw
stays in the file as one long line of ``\\r``-joined fragments.  So every
progress display of the package (SuperCircuit training, ``train``, the NSGA-II
generations, device jobs, calibration) asks :func:`use_bars` and, off a
terminal, prints a plain line instead: at most one every :data:`LINE_INTERVAL_S`
seconds when something changed, one every :data:`HEARTBEAT_S` seconds when
nothing did (a job waiting in a QPU queue is still alive), and the final state
when the display closes.

It sits in the bottom layer (next to ``text`` and ``atomic_write``) so that
``model`` can use it as well as ``search`` and ``cli``; it imports tqdm only
when a bar is drawn.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")

#: Off a terminal: the shortest time between two plain lines of one display.
LINE_INTERVAL_S = 5.0
#: Off a terminal: a line this often even when nothing changed, so a long wait does not look like a hang.
HEARTBEAT_S = 60.0


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default: stderr) is an interactive terminal (a closed or odd stream is not)."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def use_bars(requested: bool = True, stream: IO[str] | None = None) -> bool:
    """Draw bars only when asked for and ``stream`` (default: stderr) is a terminal; otherwise plain lines."""
    return bool(requested) and is_terminal(stream)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """One progress display: a tqdm bar on a terminal, throttled plain lines elsewhere, nothing when disabled.

    ``lines=False`` keeps a display silent off a terminal, for callers that
    already print their own line per step (the generation bar of a search).
    ``clock`` is injectable so the throttling is tested without sleeping.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        *,
        unit: str = "it",
        enabled: bool = True,
        lines: bool = True,
        leave: bool = True,
        initial: int = 0,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.desc = desc
        self.total = total
        self.unit = unit
        self.n = initial
        self.status = ""
        self._stream = stream
        self._clock = clock
        self._started = clock()
        self._printed_at: float | None = None
        self._printed: tuple[Any, ...] | None = None
        self._bar: Any = None
        self._lines = False
        self._closed = False
        if not enabled:
            return
        if use_bars(True, self._out()):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=self._out())
        else:
            self._lines = lines

    def _out(self) -> IO[str]:
        return sys.stderr if self._stream is None else self._stream

    # ---------------------------------------------------------------- updates
    def update(self, n: int = 1, status: str | None = None) -> None:
        """``n`` more units done (and, optionally, a new status text)."""
        self.set(completed=self.n + n, status=status)

    def set(
        self, completed: int | None = None, total: int | None = None, status: str | None = None, desc: str | None = None
    ) -> None:
        """The display's state as absolute figures (what a callback reporting counts has at hand)."""
        if completed is not None:
            self.n = int(completed)
        if total is not None:
            self.total = int(total)
        if status is not None:
            self.status = status
        if desc is not None:
            self.desc = desc
        if self._bar is not None:
            bar = self._bar
            if desc is not None:
                bar.set_description_str(desc, refresh=False)
            if total is not None and bar.total != self.total:
                bar.total = self.total
            if status is not None:
                bar.set_postfix_str(status, refresh=False)
            if self.n != bar.n:
                bar.update(self.n - bar.n)
            else:
                bar.refresh()
        elif self._lines:
            self._maybe_line()

    def tick(self) -> None:
        """Nothing new: lets a plain-line display print a pending change or its heartbeat."""
        if self._bar is not None:
            self._bar.refresh()
        elif self._lines:
            self._maybe_line()

    # ---------------------------------------------------------------- lines
    def _state(self) -> tuple[Any, ...]:
        return (self.desc, self.n, self.total, self.status)

    def line(self) -> str:
        """The display's state as one plain line: ``desc: 3/12 jobs (status) [0:42]``."""
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        status = f" ({self.status})" if self.status else ""
        return f"{self.desc}: {count} {self.unit}{status} [{_clock(self._clock() - self._started)}]"

    def _maybe_line(self, final: bool = False) -> None:
        now = self._clock()
        changed = self._state() != self._printed
        since = None if self._printed_at is None else now - self._printed_at
        due = since is None or (changed and since >= LINE_INTERVAL_S) or since >= HEARTBEAT_S
        if (final and changed) or (not final and due):
            self._write(self.line())
            self._printed, self._printed_at = self._state(), now

    def _write(self, text: str) -> None:
        out = self._out()
        try:
            out.write(text + "\n")
            out.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the computation it describes
            self._lines = False

    # ---------------------------------------------------------------- end
    def close(self) -> None:
        """Finish the display: a bar closes, a plain-line display prints its final state if not yet printed."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._lines:
            self._maybe_line(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(
    iterable: Iterable[T],
    desc: str,
    *,
    total: int | None = None,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = False,
    status: Callable[[], str] | None = None,
) -> Iterator[T]:
    """Iterate ``iterable`` under a :class:`Progress` display (closed when the loop ends or breaks).

    ``status``, called after each item, gives the text shown beside the count
    (running loss and accuracy of a training epoch, say).
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    display = Progress(desc, total, unit=unit, enabled=enabled, leave=leave)
    try:
        for item in iterable:
            yield item
            display.update(1, status=status() if status is not None and enabled else None)
    finally:
        display.close()
