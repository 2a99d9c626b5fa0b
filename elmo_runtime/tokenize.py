"""Raw English text to tokens, split the way ELMo's training data was split.

The official ELMo models were trained on the 1B Word Benchmark, which was tokenized with the
Moses `tokenizer.perl` script (English, non-aggressive hyphen mode). The char CNN only ever saw
tokens cut that way, so text cut differently ("don't" whole, "world!" with its "!") gives tokens
the model never learned and noticeably worse embeddings. This module reproduces that
convention with one `tokenizers` pre-tokenizer, so the runtime needs no Perl, no sacremoses and
no torch.

Conventions (with examples of `tokenize(text)`):

- Whitespace separates tokens; control characters (`\\p{Cc}`), every Unicode space and the
  invisible U+200B / U+2060 / U+FEFF count as whitespace. Empty or blank text gives `[]`.
- Punctuation and symbols are split off words, one character per token:
  `Hello, world!` -> `Hello , world !`; `$5` -> `$ 5`; `50%` -> `50 %`; `AT&T` -> `AT & T`;
  `"Crazy Talk"` -> `" Crazy Talk "`; `(Reuters)` -> `( Reuters )`; `5/7` -> `5 / 7`.
- Runs of periods and runs of hyphens are one token: `wait...` -> `wait ...`,
  `ago--a` -> `ago -- a`.
- Clitics: an apostrophe between two letters starts a new token (Moses' rule, which is why the
  benchmark has `Don 't` rather than PTB's `Do n't`): `Don't` -> `Don 't`, `it's` -> `it 's`,
  `can't` -> `can 't`, `I'll` -> `I 'll`, `O'Brien` -> `O 'Brien`; `1990's` -> `1990 's`.
  Any other apostrophe is a token of its own (`players'` -> `players '`), except that an
  already split clitic (`Don 't`, `Murray 's`) stays one token, so tokenized text re-tokenizes
  to itself. The typographic apostrophe U+2019 is treated like `'`.
- Words keep internal hyphens and periods, and commas between digits: `bio-identical`,
  `Lashkar-e-Taiba`, `6-3`, `3.5`, `1,000`, `68.88`; a minus sign before a number stays on it
  (`-5`).
- A word-final period is split off (`end.` -> `end .`) unless, as in Moses,
  the word has internal periods and a letter (`U.S.`, `e.g.`, `Ph.D.`, `a.m.`), or it is one
  of Moses' English non-breaking prefixes (titles such as `Mr.`, `Mrs.`, `Ms.`, `Dr.`, `St.`,
  `Prof.`, `Gen.`, month abbreviations, and any single capital letter, for initials), plus
  `Jr.`; or the next word starts with a lowercase letter (`Inc. said`). `No.`, `Art.` and `pp.`
  keep their period only before a number (`No. 1`).
- URLs (`http://`, `https://`, `ftp://`, `www.`) and e-mail addresses stay one token, minus
  trailing punctuation.
- Emoji keep their modifiers and zero-width-joiner sequences; a flag (two regional indicators)
  is one token. Other scripts are split by the same rules (CJK text without spaces stays one
  token per run of letters, as Moses leaves it).

Known deviations from Moses `tokenizer.perl`:

- Moses never splits hyphens, so `ago--a` and `well-` stay whole there; here runs of two or
  more hyphens, and hyphens not between two word characters, are split off (except a minus
  sign before a number).
- Moses mangles URLs and e-mails (`http : / / ...`); here they stay whole.
- Moses splits `’` as punctuation (`Don ’ t`); here it acts as an apostrophe (`Don ’t`).
- Moses' newer versions escape `&`, `"`, `<` ... as XML entities; the benchmark predates that
  and so does this module (characters stay as they are).
- A quoted word that looks like a split clitic (`'s`, `'t`, `'re`, `'ve`, `'ll`, `'d`, `'m`
  after whitespace) stays together; Moses would split `' s`. Other split-off apostrophes
  (`O 'Brien`) re-tokenize to `O ' Brien`.
- Lone surrogates (not valid Unicode) become U+FFFD instead of failing.
- A run of more than `MAX_RUN_CHARS` (10,000) characters without whitespace is cut into pieces
  of that many characters, each tokenized alone (a token never spans two pieces; the first
  piece stays with the text before it, so the rules that look at the next word see the same).
  Such a run is no word (the model reads only a token's first 48 bytes), and the pattern
  engine gives up, after a retry limit, on runs of a few hundred thousand URL-like
  characters.
"""

from __future__ import annotations

import logging
import re
from typing import Sequence

from tokenizers import Regex
from tokenizers.pre_tokenizers import Split

logger = logging.getLogger(__name__)

# Moses' scripts/share/nonbreaking_prefixes/nonbreaking_prefix.en (A-Z are added in the
# pattern; "i.e" and "e.g" are covered by the dotted-abbreviation rule), plus "Jr", which news
# text needs. Case-sensitive, as in Moses.
NONBREAKING_PREFIXES: tuple[str, ...] = (
    "Adj",
    "Adm",
    "Adv",
    "Apr",
    "Asst",
    "Aug",
    "Bart",
    "Bldg",
    "Brig",
    "Bros",
    "Capt",
    "Cmdr",
    "Col",
    "Comdr",
    "Con",
    "Corp",
    "Cpl",
    "DR",
    "Dec",
    "Dr",
    "Drs",
    "Ens",
    "Feb",
    "Gen",
    "Gov",
    "Hon",
    "Hosp",
    "Hr",
    "Insp",
    "Jan",
    "Jr",
    "Jul",
    "Jun",
    "Lt",
    "MM",
    "MR",
    "MRS",
    "MS",
    "Maj",
    "Mar",
    "Messrs",
    "Mlle",
    "Mme",
    "Mr",
    "Mrs",
    "Ms",
    "Msgr",
    "Nos",
    "Nov",
    "Nr",
    "Oct",
    "Op",
    "Ord",
    "Pfc",
    "Ph",
    "Prof",
    "Pvt",
    "Rep",
    "Reps",
    "Res",
    "Rev",
    "Rs",
    "Rt",
    "Sen",
    "Sens",
    "Sep",
    "Sfc",
    "Sgt",
    "Sr",
    "St",
    "Supt",
    "Surg",
    "rev",
    "v",
    "vs",
)
# Moses' "#NUMERIC_ONLY#" prefixes: they keep their period only before a number.
NUMERIC_ONLY_PREFIXES: tuple[str, ...] = ("No", "Art", "pp")

# Character classes (Oniguruma syntax, which `tokenizers.Regex` compiles).
_SEP = r"\s\p{Cc}\p{Z}\x{200B}\x{2060}\x{FEFF}"  # what counts as whitespace
_NONSEP = rf"[^{_SEP}]"
_W = r"[\p{L}\p{M}\p{N}]"  # a word character
_APOS = r"['\x{2019}]"
_CLITIC_SUFFIX = r"(?i:s|t|d|m|re|ve|ll)"

# A word: word characters joined by a hyphen or a period (".-" too, for `U.S.-led`) between
# word characters, or by a comma between digits (Moses keeps `1,000`, splits `a,b`).
_WORD = rf"{_W}+(?:(?:\.?-|\.)(?={_W}){_W}+|(?<=\p{{N}}),(?=\p{{N}}){_W}+)*"
# What may start a word token: the apostrophe of a clitic (Moses: letter'letter -> letter
# 'letter; digit's -> digit 's; `U.S.'s`), a clitic that was already split (so tokenized text
# is stable), or a minus sign.
_WORD_PREFIX = (
    rf"(?:(?<=\p{{L}}){_APOS}(?=\p{{L}})"
    rf"|(?<=\p{{N}}){_APOS}(?=s)"
    rf"|(?<=\.){_APOS}(?=s(?!{_W}))"
    rf"|(?<!{_NONSEP}){_APOS}(?={_CLITIC_SUFFIX}(?!{_W}))"
    rf"|(?<!{_W})-(?=\p{{N}}))"
)
# "(?!-?W)": a period followed by more word is internal, and `_WORD` takes the whole thing.
_END = rf"(?!-?{_W})"

_ALTERNATIVES = (
    # URL, minus trailing punctuation (the lazy body stops where only punctuation is left).
    # The bounds here and on the e-mail's local part keep adversarial text (a URL followed by
    # 100k "!", or "a_a_a_..." with no "@") linear instead of quadratic.
    rf"(?:(?:https?|ftp)://|www\.){_NONSEP}+?(?=[.,;:!?'\"\)\]\x{{2019}}]{{0,8}}(?:[{_SEP}]|\z))",
    # E-mail address (RFC 5321 caps the local part at 64 characters).
    r"[\p{L}\p{N}._%+\-]{1,64}@[\p{L}\p{N}\-]+(?:\.[\p{L}\p{N}\-]+)+",
    # A flag is two regional indicators; other emoji keep skin tones, VS16, keycaps and ZWJ.
    r"[\x{1F1E6}-\x{1F1FF}]{2}",
    r"\p{So}(?:[\x{FE0F}\x{20E3}\x{1F3FB}-\x{1F3FF}]|\x{200D}\p{So})*",
    # Ellipsis and dash runs.
    r"\.{2,}|-{2,}",
    # Numeric-only prefixes before a number (`No. 5`).
    rf"(?:{'|'.join(NUMERIC_ONLY_PREFIXES)})\.(?=[{_SEP}]+\p{{Nd}})",
    # Dotted abbreviation with a letter somewhere (`U.S.`, `e.g.`, `Ph.D.`); Moses keeps the
    # final period of any word with an internal period and a letter.
    rf"(?=[\p{{N}}.]*[\p{{L}}\p{{M}}]){_W}+(?:\.{_W}+)+\.{_END}",
    # Titles and initials. The lookahead is only for speed: it rejects most words before
    # Oniguruma tries the ~75 prefixes one by one (that cost 40% of the tokenizing time).
    rf"(?=\p{{L}}{{1,{max(map(len, NONBREAKING_PREFIXES))}}}\.)"
    rf"(?:{'|'.join(sorted(NONBREAKING_PREFIXES, key=len, reverse=True))}|[A-Z])\.{_END}",
    # A word, keeping its final period before a lowercase word (Moses: `Inc. said`).
    rf"{_WORD_PREFIX}?{_WORD}(?:\.(?=[{_SEP}]+\p{{Ll}}))?",
    # Anything else that is not whitespace: one character (plus combining marks) per token.
    rf"{_NONSEP}\p{{M}}*",
)
# One regex over the whole text rather than whitespace-splitting first: Moses' period rules
# look at the next word, which only a lookahead across the whitespace can see.
TOKEN_PATTERN: str = "|".join(_ALTERNATIVES)


# The longest run of non-whitespace characters handed to the pattern at once (see the module
# docstring): 'www.' + 'ab.' * 909092 (2.7 MB) exceeds Oniguruma's retry limit and the Rust side
# panics; 300,000 such characters take 0.2 s; a piece of 10,000 takes 15 ms.
MAX_RUN_CHARS = 10_000
# `_SEP` in Python's syntax (`\s` is Unicode whitespace, Z* included), to find those runs; a run
# is matched only from its start, so the search is linear.
_PY_SEP = r"\s\x00-\x1f\x7f-\x9f\u200b\u2060\ufeff"
_LONG_RUN = re.compile(rf"(?<![^{_PY_SEP}])[^{_PY_SEP}]{{{MAX_RUN_CHARS + 1},}}")


class TokenizerError(ValueError):
    """The tokenizer failed on a text (its Rust side raised or panicked)."""


def _replace_lone_surrogates(text: str) -> str:
    # A str can hold lone surrogates that UTF-8 (and so the Rust side) rejects; a well-formed
    # pair written as two escapes becomes its character, a lone one becomes U+FFFD.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Tokenizer:
    """Moses / 1B-Word-Benchmark tokenizer; see the module docstring for the conventions.

    Stateless after construction, so one instance can be shared (and used from threads).
    """

    def __init__(self) -> None:
        # "removed" + invert=True: the pattern's matches are the tokens and everything it
        # does not match (only whitespace, given the catch-all alternative) is dropped.
        self._pre_tokenizer = Split(Regex(TOKEN_PATTERN), behavior="removed", invert=True)

    def tokenize(self, text: str) -> list[str]:
        """Split one text into tokens.

        Args:
            text: raw text; may hold several sentences (no sentence boundaries are added).

        Returns:
            The tokens, `[]` for empty or whitespace-only text.

        Raises:
            TypeError: if `text` is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__} {text!r}; expected str")
        return self._split(text)

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[str]]:
        """Split each text into tokens.

        Args:
            texts: raw texts.

        Returns:
            One token list per text, in order.

        Raises:
            TypeError: if `texts` is a single str, or names the index and type of the first
                element that is not a str.
        """
        if isinstance(texts, str):
            # A str is a Sequence[str]: it would silently be tokenized character by character.
            raise TypeError("texts is a single str; expected a sequence of str (or use tokenize)")
        out = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__} {text!r}; expected str")
            out.append(self._split(text))
        return out

    def _split(self, text: str) -> list[str]:
        """`text`'s tokens, its runs over `MAX_RUN_CHARS` characters cut into pieces."""
        if len(text) <= MAX_RUN_CHARS:
            return self._pieces(text)
        tokens, start = [], 0
        for run in _LONG_RUN.finditer(text):
            first_end = run.start() + MAX_RUN_CHARS
            tokens += self._pieces(text[start:first_end])
            for piece in range(first_end, run.end(), MAX_RUN_CHARS):
                tokens += self._pieces(text[piece : min(piece + MAX_RUN_CHARS, run.end())])
            start = run.end()
        return tokens + self._pieces(text[start:])

    def _pieces(self, text: str) -> list[str]:
        try:
            try:
                pieces = self._pre_tokenizer.pre_tokenize_str(text)
            except UnicodeEncodeError:
                logger.debug("replacing lone surrogates with U+FFFD before tokenizing")
                pieces = self._pre_tokenizer.pre_tokenize_str(_replace_lone_surrogates(text))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # a Rust panic arrives as pyo3's PanicException, a BaseException
            raise TokenizerError(
                f"the tokenizer failed on this text ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else 'no message'})"
            ) from None
        return [piece for piece, _ in pieces]


# Built once at import (compiling the pattern takes well under a millisecond); it holds no
# state that tokenizing changes.
_DEFAULT_TOKENIZER = Tokenizer()


def tokenize(text: str) -> list[str]:
    """Split one text into tokens with a shared `Tokenizer`; see `Tokenizer.tokenize`."""
    return _DEFAULT_TOKENIZER.tokenize(text)


def tokenize_batch(texts: Sequence[str]) -> list[list[str]]:
    """Split each text into tokens with a shared `Tokenizer`; see `Tokenizer.tokenize_batch`."""
    return _DEFAULT_TOKENIZER.tokenize_batch(texts)
