import pytest


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """options.json + weights.hdf5 of the synthetic `tiny` preset."""
    from elmo_export.synthetic import write_synthetic

    return write_synthetic("tiny", tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_weights):
    from elmo_export.weights import load_reference

    return load_reference(*tiny_weights)


@pytest.fixture(scope="session")
def tiny_package(tiny_weights, tmp_path_factory):
    """The `tiny` preset exported to fp32 with the default warm initial state."""
    from elmo_export.export import export_package

    return export_package(*tiny_weights, tmp_path_factory.mktemp("pkg") / "tiny", progress=False)


@pytest.fixture(scope="session")
def elmo(tiny_package):
    """One `Elmo` on the tiny package, shared by the tests that only read from it."""
    from elmo_runtime import Elmo

    return Elmo(tiny_package, device="cpu")
