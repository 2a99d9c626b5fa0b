import numpy as np
import pytest

from elmo_runtime.chars import BOS_CHAR_IDS, batch_to_char_ids, tokens_to_char_ids


def test_a_token_is_its_utf8_bytes_plus_one_between_word_marks():
    ids = tokens_to_char_ids(["cat", "é"])
    assert ids.shape == (2, 50) and ids.dtype == np.int32
    assert ids[0, :6].tolist() == [259, 100, 98, 117, 260, 261]
    assert ids[1, :5].tolist() == [259, 0xC3 + 1, 0xA9 + 1, 260, 261]
    assert (ids[:, 5:] == 261).all()


def test_long_tokens_keep_their_first_48_bytes():
    ids = tokens_to_char_ids(["x" * 60])[0]
    assert ids[1:49].tolist() == [ord("x") + 1] * 48
    assert ids[49] == 260


def test_sentence_boundary_tokens_get_their_own_ids():
    ids = tokens_to_char_ids(["<S>", "</S>"])
    assert ids[0].tolist() == BOS_CHAR_IDS.tolist()
    assert ids[0, :3].tolist() == [259, 257, 260]
    assert ids[1, :3].tolist() == [259, 258, 260]


def test_batches_pad_with_zero_rows():
    ids = batch_to_char_ids([["a", "b", "c"], ["d"], []])
    assert ids.shape == (3, 3, 50)
    assert (ids[0] > 0).all() and (ids[1, 0] > 0).all()
    assert (ids[1, 1:] == 0).all() and (ids[2] == 0).all()
    assert ids[1, 0].tolist() == tokens_to_char_ids(["d"])[0].tolist()


def test_empty_batch():
    assert batch_to_char_ids([]).shape == (0, 0, 50)


def test_non_string_tokens_are_named():
    with pytest.raises(TypeError, match=r"token 1 is int 5"):
        tokens_to_char_ids(["a", 5])
