"""The model package contract: file names, graph input/output names, shapes and char-id constants.

The exporter writes packages by this contract and the runtime reads them by it; a client in
another language finds the same facts in the package's `elmo.json`. Change it only together
with `FORMAT_VERSION`.

A package runs as two graphs, char ids -> token embeddings -> biLM layers, so that the runtime
can cache token embeddings (the char CNN's output) between calls; their weights are disjoint.
"""

from __future__ import annotations

FORMAT_VERSION = 1
MANIFEST_FILE = "elmo.json"
TOKEN_EMBEDDER_FILE = "token_embedder.onnx"
BILM_FILE = "bilm.onnx"

# Graph tensor names. Dimension names are the symbolic (dynamic) axes.
CHAR_IDS = "char_ids"  # int32 [batch, tokens, max_characters_per_token]
TOKEN_EMBEDDINGS = "token_embeddings"  # float32 [batch, tokens, projection_dim]
MASK = "mask"  # int32 [batch, tokens]; 1 for real tokens, a prefix of each row
INITIAL_H = "initial_h"  # float32 [n_layers, 2, batch, projection_dim]; direction 0 forward
INITIAL_C = "initial_c"  # float32 [n_layers, 2, batch, dim]
LAYERS = "layers"  # float32 [n_layers + 1, batch, tokens, 2 * projection_dim]
FINAL_H = "final_h"  # like INITIAL_H: each row's state after its own last real token
FINAL_C = "final_c"  # like INITIAL_C

TOKEN_EMBEDDER_INPUTS = (CHAR_IDS,)
TOKEN_EMBEDDER_OUTPUTS = (TOKEN_EMBEDDINGS, MASK)
BILM_INPUTS = (TOKEN_EMBEDDINGS, MASK, INITIAL_H, INITIAL_C)
BILM_OUTPUTS = (LAYERS, FINAL_H, FINAL_C)

# Character ids (AllenNLP's ELMoCharacterMapper, bilm-tf's UnicodeCharsVocabulary): a token is
# [begin-of-word, its UTF-8 bytes (at most 48), end-of-word, padding...], every id shifted by
# +1 so that 0 can mean "no token" (padding rows of a batch).
MAX_CHARACTERS_PER_TOKEN = 50
MAX_TOKEN_BYTES = MAX_CHARACTERS_PER_TOKEN - 2
BEGINNING_OF_SENTENCE_CHARACTER = 256
END_OF_SENTENCE_CHARACTER = 257
BEGINNING_OF_WORD_CHARACTER = 258
END_OF_WORD_CHARACTER = 259
PADDING_CHARACTER = 260
CHAR_ID_OFFSET = 1
BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"


def char_constants() -> dict:
    """The char-id scheme as plain data, for the manifest."""
    return {
        "max_characters_per_token": MAX_CHARACTERS_PER_TOKEN,
        "max_token_bytes": MAX_TOKEN_BYTES,
        "beginning_of_sentence_character": BEGINNING_OF_SENTENCE_CHARACTER,
        "end_of_sentence_character": END_OF_SENTENCE_CHARACTER,
        "beginning_of_word_character": BEGINNING_OF_WORD_CHARACTER,
        "end_of_word_character": END_OF_WORD_CHARACTER,
        "padding_character": PADDING_CHARACTER,
        "id_offset": CHAR_ID_OFFSET,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "encoding": "utf-8, bytes that cannot be encoded are dropped, truncated to max_token_bytes",
    }
