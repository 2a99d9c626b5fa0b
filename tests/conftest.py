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
