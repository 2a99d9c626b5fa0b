"""`benchmarks/_common.py`: the child runner and the peak-RSS reader every benchmark script uses."""

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _common

    return _common


def test_a_child_reports_its_own_peak_not_its_parents(common):
    ballast = bytearray(200 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched, so resident: this process's peak is over 200 MiB
    assert common.peak_rss_mib() >= 200
    code = (
        "import json\n"
        "from _common import peak_rss_mib\n"
        "big = bytearray(64 * 2**20); big[::4096] = b'x' * len(big[::4096])\n"
        "print('other output first')\n"
        "print(json.dumps({'peak': peak_rss_mib()}))"
    )
    # Its own 64 MiB and an interpreter, not the parent's 200 MiB (which its ru_maxrss would carry).
    assert 64 <= common.run_child(code)["peak"] < 150
    del ballast


def test_a_failing_child_names_its_exit_code_and_error(common):
    with pytest.raises(RuntimeError, match=r"exited 3:\n.*the reason"):
        common.run_child("import sys\nsys.exit(print('the reason', file=sys.stderr) or 3)")
