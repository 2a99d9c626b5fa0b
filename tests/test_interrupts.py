"""SIGINT/SIGTERM during a command: raised as KeyboardInterrupt, remembered, and a lost one is not printed."""

import os
import signal
import subprocess
import sys

import pytest

from elmo_runtime.interrupts import interrupts_raise


class RaisesWhenCollected:
    def __init__(self, exc: BaseException):
        self.exc = exc

    def __del__(self):
        raise self.exc


def test_sigterm_raises_keyboardinterrupt_and_is_remembered():
    with pytest.raises(KeyboardInterrupt), interrupts_raise() as seen:
        os.kill(os.getpid(), signal.SIGTERM)
    assert seen.signum == signal.SIGTERM and seen.event.is_set()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_an_interrupt_lost_in_a_destructor_is_not_printed_but_other_errors_are(monkeypatch):
    printed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: printed.append(type(info.exc_value)))
    with interrupts_raise() as seen:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
        RaisesWhenCollected(KeyboardInterrupt())  # collected at once: the interrupt is lost there
        RaisesWhenCollected(ValueError("a real bug"))
        with pytest.raises(KeyboardInterrupt):
            seen.check()
    assert printed == [ValueError]
    RaisesWhenCollected(KeyboardInterrupt())  # outside the block Python's hook sees it again
    assert printed == [ValueError, KeyboardInterrupt]


def test_before_any_signal_a_lost_keyboardinterrupt_is_still_printed(monkeypatch):
    printed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: printed.append(type(info.exc_value)))
    with interrupts_raise():
        RaisesWhenCollected(KeyboardInterrupt())
    assert printed == [KeyboardInterrupt]


def test_an_interrupt_that_escapes_does_not_make_python_kill_itself():
    # Python's own KeyboardInterrupt escaping `python -c` ends the process by SIGINT (-2), which
    # would also happen to a command that caught ours elsewhere; ours ends it as an error (1).
    code = (
        "import os, signal, time\nfrom elmo_runtime.interrupts import interrupts_raise\n"
        "with interrupts_raise():\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(5)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "Interrupted" in run.stderr, (run.returncode, run.stderr)
