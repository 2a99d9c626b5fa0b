"""SIGINT and SIGTERM for the command lines: both interrupt, both are remembered.

SIGTERM is what `timeout`, `kill` and `docker stop` send; by default it ends Python at once,
skipping the cleanup that removes temporary files. Here it raises `KeyboardInterrupt` (the
subclass `Interrupted`) like Ctrl-C, so the same `except`/`finally` paths run. The signal is
also recorded in an event: a `KeyboardInterrupt` raised while Python runs a weakref callback
or a `__del__` (h5py's object registry and torch do so) is lost, and a loop that checks the
event stops anyway.
Python would print such a lost interrupt as an "Exception ignored" traceback; within the
block it is dropped silently instead, since the event carries it and the command line says
"interrupted" in one line.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator


class Interrupted(KeyboardInterrupt):
    """What the handlers raise: caught by every `except KeyboardInterrupt`, but not Python's own type.

    When Python's own KeyboardInterrupt leaves code that the interpreter runs from a string or a
    module (`python -c`, `python -m`, and libraries that run code through the C API), CPython
    notes it and, once the program has exited, kills itself with SIGINT: a command that caught
    the interrupt and returned 130 or 143 would end by a signal instead (seen as exit -2 now and
    then in a test of `elmo-embed`). That note is made for the exact type only.
    """


class Interrupts:
    """What `interrupts_raise` saw: `signum` (None until a signal came) and `event` (set by it)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.event = threading.Event()

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal came (in case the one the handler raised was lost)."""
        if self.event.is_set():
            raise Interrupted


@contextmanager
def interrupts_raise() -> Iterator[Interrupts]:
    """Within the block, SIGINT and SIGTERM raise KeyboardInterrupt and are recorded.

    The previous handlers come back afterwards. Outside the main thread (where Python cannot
    install handlers) nothing is installed and the event is never set.
    """
    seen = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum: int, frame) -> None:
        seen.signum = signum
        seen.event.set()
        raise Interrupted

    def unraisable(info) -> None:
        if not (seen.event.is_set() and isinstance(info.exc_value, KeyboardInterrupt)):
            previous_hook(info)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield seen
    finally:
        sys.unraisablehook = previous_hook
        for s, old in previous.items():
            signal.signal(s, signal.SIG_DFL if old is None else old)


def stdout_gone() -> int:
    """After a BrokenPipeError on stdout (`elmo-verify --json | head -c 20`): the exit status.

    Standard output is pointed at /dev/null, so that the interpreter's final flush does not
    fail again and print a traceback; the status is a shell's for a command SIGPIPE ended.
    """
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE
