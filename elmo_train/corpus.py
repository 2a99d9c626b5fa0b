"""A language-model corpus from WordNet 3.0's glosses, made reproducibly and offline.

WordNet's `data.{adj,adv,noun,verb}` files (Debian package `wordnet-base`, under
/usr/share/wordnet) hold one synset a line; its gloss follows `| `: a definition, then
quoted example sentences (`"she was able to swim"`). Each definition and each example becomes
one line, tokenized as the runtime tokenizes (`elmo_runtime.tokenize.tokenize`). A line goes to
the held-out split when a hash of its text says so, so the split does not depend on file order.

Writes into the output folder:
    train.txt, heldout.txt   one sentence a line, tokens separated by single spaces
                             (`elmo_export.sentences.read_sentences` reads them)
    vocab.txt                `word<TAB>count`: <S>, </S>, <UNK>, then words with count >= k
                             by count (ties in byte order), counts from train.txt
    stats.json               token and sentence counts, the settings used
    LICENSE.wordnet          WordNet 3.0's licence, which must accompany derived works
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from elmo_runtime import contract
from elmo_runtime.tokenize import tokenize

log = logging.getLogger(__name__)

WORDNET_DIR = Path("/usr/share/wordnet")
DATA_FILES = ("data.adj", "data.adv", "data.noun", "data.verb")
UNK_TOKEN = "<UNK>"
SPECIAL_TOKENS = (contract.BOS_TOKEN, contract.EOS_TOKEN, UNK_TOKEN)

_EXAMPLE = re.compile(r'"([^"]+)"')


@dataclass(frozen=True)
class CorpusSettings:
    """How the corpus is cut: the held-out share (per mille, by hash) and the vocabulary cut-off."""

    heldout_per_mille: int = 20
    min_count: int = 3


def gloss_sentences(line: str) -> list[str]:
    """The definition and the quoted examples of one `data.*` line (none for header lines)."""
    if line.startswith("  ") or "|" not in line:  # the licence header, indented two spaces
        return []
    gloss = line.split("|", 1)[1].strip()
    examples = [e.strip() for e in _EXAMPLE.findall(gloss)]
    first_quote = gloss.find('"')
    definition = (gloss if first_quote < 0 else gloss[:first_quote]).strip().rstrip(";").strip()
    return [s for s in [definition, *examples] if s]


def read_wordnet(wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """Every gloss sentence, in file order, exact duplicates dropped (first kept)."""
    seen: set[str] = set()
    sentences = []
    for name in DATA_FILES:
        path = wordnet_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; install WordNet 3.0 with `apt-get install wordnet-base`")
        with path.open(encoding="utf-8") as fin:
            for line in fin:
                for sentence in gloss_sentences(line):
                    if sentence not in seen:
                        seen.add(sentence)
                        sentences.append(sentence)
    return sentences


def read_licence(wordnet_dir: Path = WORDNET_DIR) -> str:
    """The licence WordNet prints at the head of each data file."""
    lines = []
    with (wordnet_dir / DATA_FILES[0]).open(encoding="utf-8") as fin:
        for line in fin:
            if not line.startswith("  "):
                break
            lines.append(line[2:].rstrip().split(" ", 1)[1] if " " in line[2:].rstrip() else "")
    return "\n".join(lines).strip() + "\n"


def is_heldout(sentence: str, per_mille: int) -> bool:
    """Deterministic split: the first 8 bytes of the SHA-1 of the text, modulo 1000."""
    digest = hashlib.sha1(sentence.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 1000 < per_mille


def build_vocab(sentences: list[list[str]], min_count: int) -> list[tuple[str, int]]:
    """`(word, count)` rows: <S>, </S> (one per sentence), <UNK> (tokens cut), then the words."""
    counts = Counter(t for s in sentences for t in s)
    kept = sorted(
        ((w, n) for w, n in counts.items() if n >= min_count and w not in SPECIAL_TOKENS),
        key=lambda wn: (-wn[1], wn[0].encode("utf-8")),
    )
    unk = sum(counts.values()) - sum(n for _, n in kept)
    return [(contract.BOS_TOKEN, len(sentences)), (contract.EOS_TOKEN, len(sentences)), (UNK_TOKEN, unk), *kept]


def write_vocab(rows: list[tuple[str, int]], path: Path) -> None:
    path.write_text("".join(f"{w}\t{n}\n" for w, n in rows), encoding="utf-8")


def read_vocab(path: str | Path) -> list[tuple[str, int]]:
    """Read `vocab.txt`: `word<TAB>count` rows, or bare words (counts then 0)."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        word, _, count = line.partition("\t")
        if not word:
            raise ValueError(f"{path}:{number}: empty word")
        rows.append((word, int(count) if count else 0))
    if [w for w, _ in rows[:3]] != list(SPECIAL_TOKENS):
        raise ValueError(f"{path}: must start with {', '.join(SPECIAL_TOKENS)}")
    return rows


def prepare_corpus(
    out_dir: str | Path, wordnet_dir: str | Path = WORDNET_DIR, heldout_per_mille: int = 20, min_count: int = 3
) -> dict:
    """Extract, tokenize, split and count WordNet's glosses into `out_dir`.

    Returns:
        The statistics written to `stats.json`.

    Raises:
        FileNotFoundError: WordNet's data files are missing.
        ValueError: a setting out of range.
    """
    settings = CorpusSettings(heldout_per_mille, min_count)
    if not 0 < heldout_per_mille < 1000:
        raise ValueError(f"heldout_per_mille is {heldout_per_mille}, expected 1..999")
    if min_count < 1:
        raise ValueError(f"min_count is {min_count}, expected >= 1")
    out_dir, wordnet_dir = Path(out_dir), Path(wordnet_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    texts = read_wordnet(wordnet_dir)
    splits: dict[str, list[list[str]]] = {"train": [], "heldout": []}
    for text in texts:
        tokens = [t for t in tokenize(text) if t.strip()]
        if tokens:
            splits["heldout" if is_heldout(text, heldout_per_mille) else "train"].append(tokens)
    for name, sentences in splits.items():
        with (out_dir / f"{name}.txt").open("w", encoding="utf-8") as fout:
            fout.writelines(" ".join(s) + "\n" for s in sentences)
    vocab = build_vocab(splits["train"], min_count)
    write_vocab(vocab, out_dir / "vocab.txt")
    (out_dir / "LICENSE.wordnet").write_text(read_licence(wordnet_dir), encoding="utf-8")

    words = {w for w, _ in vocab}
    heldout_tokens = sum(len(s) for s in splits["heldout"])
    heldout_oov = sum(t not in words for s in splits["heldout"] for t in s)
    stats = {
        "source": f"WordNet 3.0 glosses and examples, {', '.join(DATA_FILES)}",
        "settings": asdict(settings),
        "gloss_sentences": len(texts),
        "train_sentences": len(splits["train"]),
        "train_tokens": sum(len(s) for s in splits["train"]),
        "heldout_sentences": len(splits["heldout"]),
        "heldout_tokens": heldout_tokens,
        "heldout_oov_rate": heldout_oov / max(heldout_tokens, 1),
        "train_types": len({t for s in splits["train"] for t in s}),
        "vocab_size": len(vocab),
        "train_unk_rate": vocab[2][1] / max(sum(len(s) for s in splits["train"]), 1),
    }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    log.info("corpus written to %s: %s", out_dir, json.dumps(stats))
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare the WordNet 3.0 gloss corpus for training.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--wordnet-dir", type=Path, default=WORDNET_DIR)
    parser.add_argument("--heldout-per-mille", type=int, default=CorpusSettings.heldout_per_mille)
    parser.add_argument("--min-count", type=int, default=CorpusSettings.min_count)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    prepare_corpus(args.out_dir, args.wordnet_dir, args.heldout_per_mille, args.min_count)


if __name__ == "__main__":
    main()
