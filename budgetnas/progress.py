"""What a running search (or reproduction) shows while it works: a live display or plain lines.

Why a library and two modes: a search trial can train silently for minutes on a loaded CPU,
so the user needs to see the steps move inside an epoch, the images per second and an ETA
that does not jump from hours to minutes. ``rich.progress`` measures the speed and remaining
time from the updates it is given; this module only decides what to feed it:

* the *search* bar counts trials, advanced fractionally by the current trial's training
  steps, so its ETA comes from measured step times (and is capped by the time budget,
  ``--timeout``, when there is one);
* the *trial* bar counts the current epoch's training images, so its speed is images/s.

On a terminal (stderr is a TTY) the bars are drawn live and every message is printed above
them; elsewhere (CI, ``nohup``, a pipe) each event is one plain line, as before, and the
bars are tracked without drawing so that the per-trial lines still carry an ETA. ``quiet``
prints nothing. ``NO_COLOR`` and ``TERM=dumb`` are honoured by rich's console.

A :class:`Monitor` is callable with a message, so it can be passed wherever the library
takes a plain ``progress`` function (``run_search``, ``run_workers``).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Callable

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn,
                           TimeElapsedColumn)
from rich.text import Text

# Long enough that a slow trial's steps and a fast one's average out, short enough to follow a change.
SPEED_WINDOW_S = 600.0


def clock(seconds: float) -> str:
    """``75`` -> ``1:15``, ``3725`` -> ``1:02:05`` (rich's elapsed column uses the same h:mm:ss)."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class _EtaColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        return Text(f"ETA {clock(eta)}" if eta is not None else "ETA -:--", style="progress.remaining")


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.fields.get("key") is None:  # the search bar counts trials, not images
            return Text("")
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} img/s" if speed else "- img/s", style="progress.data.speed")


class Monitor:
    """Progress of one search: messages, trials i/N, the current trial's epoch and steps, ETA."""

    def __init__(self, *, live: bool = False, quiet: bool = False, stream: IO[str] | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.quiet = quiet
        self.say = say
        self.live = live and not quiet
        self.console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                             TextColumn("{task.fields[detail]}"), _SpeedColumn(), TimeElapsedColumn(),
                             _EtaColumn(), console=self.console, disable=not self.live, transient=False,
                             speed_estimate_period=SPEED_WINDOW_S, redirect_stdout=False, redirect_stderr=False)
        self.search: TaskID | None = None
        self.trial: TaskID | None = None
        self.deadline: float | None = None
        self.done = 0
        self._last_update = 0.0

    # -- plain messages (the ``progress`` function the library already takes) --------------------------
    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        if self.say is not None:
            self.say(message)
        elif self.live:
            self.bars.console.print(message, markup=False)
        else:
            self.console.file.write(message + "\n")
            self.console.file.flush()

    # -- the search ----------------------------------------------------------------------------------
    def start(self, total: int | None, done: int, timeout: float | None) -> None:
        """Begin the search bar: ``total`` trials (None: until the timeout), ``done`` already finished."""
        self.done = done
        self.deadline = time.perf_counter() + timeout if timeout is not None else None
        self.search = self.bars.add_task("trials", total=total, completed=done, detail="", eta=self._eta(None))
        self.bars.start()

    def step(self, trial: int, epoch: int, epochs: int, step: int, steps: int, images: int, epoch_images: int) -> None:
        """One training step of ``trial`` finished (``images`` in this step, ``epoch_images`` per epoch)."""
        if self.quiet:
            return  # nothing will be shown: keep the training loop's hook free
        if self.trial is None or self._task(self.trial).fields.get("key") != (trial, epoch):
            if self.trial is not None:
                self.bars.remove_task(self.trial)
            self.trial = self.bars.add_task(f"trial {trial} epoch {epoch}/{epochs}", total=epoch_images,
                                            detail="", eta=None, key=(trial, epoch))
        self.bars.update(self.trial, advance=images, detail=f"step {step}/{steps}")
        now = time.perf_counter()
        if self.search is not None and (now - self._last_update >= 1.0 or step == steps):
            self._last_update = now
            fraction = ((epoch - 1) + step / steps) / epochs
            self.bars.update(self.search, completed=self.done + min(fraction, 0.999))
            self.bars.update(self.search, eta=self._eta(self._task(self.search).time_remaining))
            self.bars.update(self.trial, eta=self._task(self.trial).time_remaining)

    def trial_finished(self, done: int, detail: str = "") -> float | None:
        """A trial counted towards the total (``detail``: e.g. the best so far, shown beside the bar);
        returns the ETA of the search in seconds (None: unknown)."""
        self.done = done
        if self.trial is not None:
            self.bars.remove_task(self.trial)
            self.trial = None
        if self.search is None:
            return None
        self.bars.update(self.search, completed=done, detail=detail)
        eta = self._eta(self._task(self.search).time_remaining)
        self.bars.update(self.search, eta=eta)
        return eta

    def stop(self) -> None:
        if self.trial is not None:
            self.bars.remove_task(self.trial)
            self.trial = None
        self.bars.stop()

    def _task(self, task_id: TaskID) -> Task:
        return next(task for task in self.bars.tasks if task.id == task_id)

    def _eta(self, estimate: float | None) -> float | None:
        if self.deadline is None:
            return estimate
        left = max(self.deadline - time.perf_counter(), 0.0)
        return left if estimate is None else min(estimate, left)


class Remaining:
    """ETA of a known amount of work (e.g. ``reproduce``'s models, weighted by their cost) from the
    progress measured so far; rich tracks the samples. None until two updates have been timed."""

    def __init__(self, total: float) -> None:
        self._bars = Progress(disable=True, speed_estimate_period=SPEED_WINDOW_S)
        self._task = self._bars.add_task("work", total=total)

    def at(self, completed: float) -> float | None:
        """Seconds left once ``completed`` of the total is done."""
        self._bars.update(self._task, completed=completed)
        return self._bars.tasks[0].time_remaining


def monitor(quiet: bool = False, stream: IO[str] | None = None) -> Monitor:
    """The monitor that suits ``stream`` (stderr): live on a terminal, plain lines elsewhere."""
    stream = stream or sys.stderr
    console = Console(file=stream)
    return Monitor(live=console.is_terminal and not console.is_dumb_terminal, quiet=quiet, stream=stream)


def as_monitor(progress: Callable[[str], None] | None) -> Monitor:
    """Wrap a plain ``progress`` function (or nothing) so the library can always call a Monitor."""
    if isinstance(progress, Monitor):
        return progress
    return Monitor(quiet=progress is None, say=progress)
