import os

import pytest

# Skips that are about the machine, not about what CI installs: in CI (CI set; .ci/run sets it)
# every other skip is turned into a failure, so that a test missing an extra, a program (java,
# node) or a fixture cannot go quiet there. A new skip of this kind needs its reason here.
ALLOWED_IN_CI = (
    "released-size architecture",  # --run-full-size: minutes and GBs, never in CI
    "needs the flair package",  # --run-flair: flair is ~630 MB and 2.5 min to install, never in CI
    "CUDA",  # no GPU on the CI machine (and its converse: "CUDA works here")
    "onnxruntime-gpu is installed",
    "root can write anywhere",  # a permission test, where CI runs as root
)


def _skip_fails_in_ci(report) -> None:
    if not (os.environ.get("CI") and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(allowed in reason for allowed in ALLOWED_IN_CI):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run it (CI is set; tests/conftest.py ALLOWED_IN_CI): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _skip_fails_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _skip_fails_in_ci(outcome.get_result())


def pytest_addoption(parser):
    parser.addoption(
        "--run-full-size",
        action="store_true",
        help="also run the tests marked full_size (released-size architectures; not in CI)",
    )
    parser.addoption(
        "--run-flair",
        action="store_true",
        help="also run the tests marked flair (need the flair package: too heavy for CI)",
    )


def pytest_collection_modifyitems(config, items):
    # Only these opt-in markers: the `slow` tests (a wheel installed into a fresh venv) run by default, as in CI.
    opt_in = {
        "full_size": ("--run-full-size", "released-size architecture: pass --run-full-size to run it"),
        "flair": (
            "--run-flair",
            "needs the flair package (tests/test_compat_flair.py says how): pass --run-flair to run it",
        ),
    }
    for marker, (option, reason) in opt_in.items():
        if config.getoption(option):
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """options.json + weights.hdf5 of the synthetic `tiny` architecture."""
    from elmo_export.synthetic import write_synthetic

    return write_synthetic("tiny", tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_weights):
    from elmo_export.weights import load_reference

    return load_reference(*tiny_weights)


@pytest.fixture(scope="session")
def sizes(tiny_model):
    """The tiny model's sizes, as the tests expect them in shapes (never written as literals)."""
    from types import SimpleNamespace

    o = tiny_model.options
    return SimpleNamespace(
        layers=o.n_layers + 1,
        dim=2 * o.projection_dim,
        n_layers=o.n_layers,
        projection_dim=o.projection_dim,
        cells=o.dim,
    )


@pytest.fixture(scope="session")
def model_files(tiny_weights):
    """`(options, weights)` of a model by name: "tiny", or a TF fixture set."""
    from tf_fixtures import load_fixture_set

    def files(name):
        if name == "tiny":
            return tiny_weights
        fixture = load_fixture_set(name)
        return fixture.options, fixture.weights

    return files


@pytest.fixture(scope="session")
def exported(tmp_path_factory, model_files):
    """`exported(name, precision="fp32", state="warm", exact_activations=False)`: that export,
    made once per session.

    Tests that only read a package share it; tests that break one work on a copy.
    """
    from elmo_export import export_package

    root = tmp_path_factory.mktemp("packages")
    done = {}

    def get(name, precision="fp32", state="warm", exact_activations=False):
        key = name, precision, state, exact_activations
        if key not in done:
            done[key] = export_package(
                *model_files(name),
                root / f"{name}-{precision}-{state}{'-exact' if exact_activations else ''}",
                precision=precision,
                initial_state=state,
                exact_activations=exact_activations,
                progress=False,
            )
        return done[key]

    return get


@pytest.fixture(scope="session")
def tiny_package(exported):
    """The `tiny` architecture exported to fp32 with the default warm initial state."""
    return exported("tiny")


@pytest.fixture(scope="session")
def elmo(tiny_package):
    """One `Elmo` on the tiny package, shared by the tests that only read from it."""
    from elmo_runtime import Elmo

    return Elmo(tiny_package, device="cpu")


@pytest.fixture
def dead_pid() -> int:
    """The PID of a process that has exited (to stand for the owner of a killed run's leftovers)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
