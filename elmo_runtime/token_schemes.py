"""Tokens -> the token embedder's integer inputs, by the scheme a package's manifest names.

Two schemes, each described in `elmo.json` as plain data (`manifest["chars"]`: `scheme` names
it, its parameters sit under that name), so that a client in another language can map tokens
without this code (`docs/package-format.md` specifies both):

- `bytes` (bilm-tf, AllenNLP, the NLPL bilm-tf models): a token's UTF-8 bytes between begin-
  and end-of-word marks, `max_characters_per_token` wide (50 unless the model says otherwise).
  Implemented in `elmo_runtime.chars`.
- `dictionary` (HIT-SCIR's ELMoForManyLangs): a per-model dictionary of Unicode characters
  (`chars.json`, character -> id) with its own special entries, plus a word dictionary
  (`words.json`, word -> id, described under `chars.dictionary.words`) feeding a word embedding. A token longer than
  `max_characters_per_token - 2` code points is cut to that many code points, for the word and
  the char lookup alike; unknown characters and words map to their `unknown` ids; the word is
  framed by `begin_of_word` and `end_of_word` (ELMoForManyLangs writes its `<eow>` id first and
  its `<bow>` id last: the ids in the manifest are the ones that go first and last); the rest
  of the row is `padding`. The literal tokens `bos_token`/`eos_token` are the sentence
  boundaries: `[begin_of_word, bos_char, end_of_word, padding...]` and the word ids `bos`/`eos`.

Every char id is shifted by `id_offset` (1), so that an all-zero row means "no token" (padding
rows of a batch) and the mask is `any(char_ids > 0)`. Word ids are used as they are; padding
positions get 0 (masked by the biLM).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from elmo_runtime import chars
from elmo_runtime import contract as C

# Graph input names of the token embedder.
CHAR_IDS = C.CHAR_IDS
WORD_IDS = C.WORD_IDS

BYTES = "bytes"
DICTIONARY = "dictionary"


def _check_tokens(tokens: Sequence[str]) -> None:
    for i, t in enumerate(tokens):
        if not isinstance(t, str):
            raise TypeError(f"token {i} is {type(t).__name__} {t!r}; tokens must be str")


@dataclass(frozen=True)
class ByteScheme:
    """UTF-8 bytes between word marks (`elmo_runtime.chars`), `max_characters_per_token` wide."""

    max_characters_per_token: int = C.MAX_CHARACTERS_PER_TOKEN
    name: str = BYTES
    bos_token: str = C.BOS_TOKEN
    eos_token: str = C.EOS_TOKEN

    @property
    def inputs(self) -> tuple[str, ...]:
        return (CHAR_IDS,)

    def encode(self, tokens: Sequence[str]) -> dict[str, np.ndarray]:
        """`{char_ids: (N, C)}` int32 for a list of tokens."""
        return {CHAR_IDS: chars.tokens_to_char_ids(tokens, self.max_characters_per_token)}

    def encode_batch(self, sentences: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """`{char_ids: (B, T, C)}`, all-zero rows at padding."""
        return {CHAR_IDS: chars.batch_to_char_ids(sentences, self.max_characters_per_token)}

    def to_manifest(self) -> dict:
        """The manifest's `chars` entry (`contract.char_constants`), at the model's own width."""
        return C.char_constants(self.max_characters_per_token)


@dataclass(frozen=True)
class DictionaryScheme:
    """Per-model character and word dictionaries (ELMoForManyLangs).

    Attributes:
        chars: character -> id (ids before the `id_offset` shift).
        words: word -> id, or None for a model without a word embedding.
        begin_of_word, end_of_word, padding, unknown_char, bos_char, eos_char: char ids.
        unknown_word, bos_word, eos_word: word ids (None without words).
    """

    chars: Mapping[str, int]
    words: Mapping[str, int] | None
    max_characters_per_token: int
    begin_of_word: int
    end_of_word: int
    padding: int
    unknown_char: int
    bos_char: int
    eos_char: int
    unknown_word: int | None = None
    bos_word: int | None = None
    eos_word: int | None = None
    bos_token: str = "<bos>"
    eos_token: str = "<eos>"
    name: str = field(default=DICTIONARY)

    CHARS_FILE = "chars.json"
    WORDS_FILE = "words.json"

    @property
    def inputs(self) -> tuple[str, ...]:
        return (CHAR_IDS, WORD_IDS) if self.words is not None else (CHAR_IDS,)

    @property
    def max_token_chars(self) -> int:
        return self.max_characters_per_token - 2

    @functools.cached_property
    def _code_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The single-character entries as sorted code points and their ids (a vectorised lookup)."""
        single = sorted((ord(k), v) for k, v in self.chars.items() if len(k) == 1)
        return (
            np.asarray([c for c, _ in single], dtype=np.uint32).reshape(-1),
            np.asarray([v for _, v in single], dtype=np.int32).reshape(-1),
        )

    def _lookup(self, code_points: np.ndarray) -> np.ndarray:
        keys, values = self._code_points
        if keys.size == 0:
            return np.full(code_points.shape, self.unknown_char, dtype=np.int32)
        at = np.minimum(np.searchsorted(keys, code_points), keys.size - 1)
        return np.where(keys[at] == code_points, values[at], self.unknown_char).astype(np.int32)

    def encode(self, tokens: Sequence[str]) -> dict[str, np.ndarray]:
        """`{char_ids: (N, C), word_ids: (N,)}` int32 for a list of tokens."""
        _check_tokens(tokens)
        n = len(tokens)
        cut = [t[: self.max_token_chars] for t in tokens]
        lengths = np.fromiter(map(len, cut), dtype=np.int64, count=n)
        # UTF-32 gives one code point per 4 bytes (lone surrogates included: they are unknown).
        flat = np.frombuffer("".join(cut).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = np.full((n, self.max_characters_per_token), self.padding, dtype=np.int32)
        ids[:, 0] = self.begin_of_word
        rows = np.repeat(np.arange(n), lengths)
        cols = 1 + np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        ids[rows, cols] = self._lookup(flat)
        ids[np.arange(n), lengths + 1] = self.end_of_word
        for i, t in enumerate(tokens) if (self.bos_token in tokens or self.eos_token in tokens) else ():
            if t == self.bos_token or t == self.eos_token:
                ids[i, 1:] = self.padding
                ids[i, 1] = self.bos_char if t == self.bos_token else self.eos_char
                ids[i, 2] = self.end_of_word
        out = {CHAR_IDS: ids + C.CHAR_ID_OFFSET}
        if self.words is not None:
            get, unknown = self.words.get, self.unknown_word
            out[WORD_IDS] = np.fromiter(
                (get(t[: self.max_token_chars], unknown) for t in tokens), dtype=np.int32, count=len(tokens)
            )
        return out

    def encode_batch(self, sentences: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """`{char_ids: (B, T, C), word_ids: (B, T)}`, zero at padding."""
        lengths = [len(s) for s in sentences]
        width = max(lengths, default=0)
        mask = np.arange(width)[None, :] < np.asarray(lengths, dtype=np.int64).reshape(-1, 1)
        flat = self.encode([t for s in sentences for t in s])
        out = {}
        for name, values in flat.items():
            padded = np.zeros((len(sentences), width, *values.shape[1:]), dtype=np.int32)
            padded[mask] = values
            out[name] = padded
        return out

    def to_manifest(self) -> dict:
        """The manifest's `chars` entry: the scheme named, its parameters under its name (the
        dictionaries themselves go in their own files)."""
        params = {
            "file": self.CHARS_FILE,
            "max_token_characters": self.max_token_chars,
            "truncation": "unicode code points",
            "begin_of_word": self.begin_of_word,
            "end_of_word": self.end_of_word,
            "padding": self.padding,
            "unknown": self.unknown_char,
            "bos_char": self.bos_char,
            "eos_char": self.eos_char,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "words": None,
        }
        if self.words is not None:
            params["words"] = {
                "file": self.WORDS_FILE,
                "unknown": self.unknown_word,
                "bos": self.bos_word,
                "eos": self.eos_word,
                "size": len(self.words),
                "truncation": "as for chars (the truncated token is looked up)",
            }
        return {
            "scheme": DICTIONARY,
            "max_characters_per_token": self.max_characters_per_token,
            "id_offset": C.CHAR_ID_OFFSET,
            "padding_row_id": 0,
            DICTIONARY: params,
        }

    def write_files(self, directory: Path) -> list[Path]:
        """Write the dictionaries (JSON objects token -> id) into a package directory."""
        written = []
        tables = [(self.CHARS_FILE, self.chars)] + ([(self.WORDS_FILE, self.words)] if self.words is not None else [])
        for name, table in tables:
            path = Path(directory) / name
            path.write_text(json.dumps(dict(table), ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
            written.append(path)
        return written


TokenScheme = ByteScheme | DictionaryScheme


def scheme_files(entry: Mapping) -> list[tuple[str, object]]:
    """The files a manifest's `chars` entry reads, as `(field, value)`: the dictionary scheme's
    `chars.dictionary.file` and `chars.dictionary.words.file` (none for `bytes`).

    `package.load_manifest` confines them to the package and requires them listed in `files`
    (so sized and sha256-checked), as it does the graphs, before `scheme_from_manifest` reads them.
    """
    if not isinstance(entry, Mapping) or entry.get("scheme") != DICTIONARY:
        return []
    params = entry.get(DICTIONARY)
    if not isinstance(params, Mapping):
        return []  # scheme_from_manifest names the missing parameters
    out = [(f"chars.{DICTIONARY}.file", params.get("file"))]
    words = params.get("words")
    if isinstance(words, Mapping):
        out.append((f"chars.{DICTIONARY}.words.file", words.get("file")))
    return out


class SchemeError(ValueError):
    """A manifest whose token scheme this runtime cannot read (the field is named)."""


def _dictionary_table(directory: Path, section: str, spec: Mapping) -> dict[str, int]:
    """The JSON dictionary file `spec["file"]` names: tokens to integer ids."""
    path = directory / str(spec.get("file", ""))
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SchemeError(f"{directory}: the {section} dictionary {path.name!r} cannot be read ({e})") from None
    if not isinstance(loaded, dict) or not all(type(v) is int for v in loaded.values()):
        raise SchemeError(f"{path}: expected a JSON object mapping tokens to integer ids")
    return loaded


def _int_fields(directory: Path, spec: Mapping, section: str, *keys: str) -> list[int]:
    """The int values of `keys` in `spec` (the manifest section `section`), in order."""
    missing = [k for k in keys if type(spec.get(k)) is not int]
    if missing:
        raise SchemeError(f"{directory}: {section}.{missing[0]} is missing or not an int")
    return [spec[k] for k in keys]


def scheme_from_manifest(entry: Mapping, directory: str | Path) -> TokenScheme:
    """The token scheme a package's manifest describes in its `chars` entry.

    `package.load_manifest` has checked the entry's common fields, and that the files it names
    are the package's own, listed and verified.

    Raises:
        SchemeError: an unknown scheme, a missing field or an unreadable dictionary file.
    """
    directory = Path(directory)
    entry = entry or {}
    name = entry.get("scheme", BYTES)
    width = entry.get("max_characters_per_token", C.MAX_CHARACTERS_PER_TOKEN)
    if not isinstance(width, int) or width < 3:
        raise SchemeError(f"{directory}: chars.max_characters_per_token is {width!r}, expected an int >= 3")
    if name == BYTES:
        return ByteScheme(width)
    if name != DICTIONARY:
        raise SchemeError(f"{directory}: chars.scheme is {name!r}; this runtime reads {BYTES!r} and {DICTIONARY!r}")

    params = entry.get(DICTIONARY)
    if not isinstance(params, dict):
        raise SchemeError(f"{directory}: chars.{DICTIONARY} is missing: the dictionary scheme's parameters")
    bow, eow, pad, unk, bos, eos = _int_fields(
        directory,
        params,
        f"chars.{DICTIONARY}",
        "begin_of_word",
        "end_of_word",
        "padding",
        "unknown",
        "bos_char",
        "eos_char",
    )
    for key in ("bos_token", "eos_token"):
        if not isinstance(params.get(key), str) or not params[key]:
            raise SchemeError(f"{directory}: chars.{DICTIONARY}.{key} is missing or not a non-empty str")
    words = params.get("words")
    word_table = unk_w = bos_w = eos_w = None
    if words:
        word_table = _dictionary_table(directory, "words", words)
        unk_w, bos_w, eos_w = _int_fields(directory, words, f"chars.{DICTIONARY}.words", "unknown", "bos", "eos")
    return DictionaryScheme(
        _dictionary_table(directory, "chars", params),
        word_table,
        width,
        bow,
        eow,
        pad,
        unk,
        bos,
        eos,
        unk_w,
        bos_w,
        eos_w,
        params["bos_token"],
        params["eos_token"],
    )
