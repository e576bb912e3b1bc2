"""Labelled sentiment data: file readers and the fixed, seeded train / validation / test split.

Every example is mapped onto the default model's labels (negative, neutral, positive).
Readers:
* TweetEval: ``*_text.txt`` + ``*_labels.txt`` (0 negative, 1 neutral, 2 positive);
* TSV ``text<TAB>label`` with an optional header; labels are names or 0/1/2 (0/1 for
  two-column binary data such as SST-2, where 1 means positive).
"""

from __future__ import annotations

import csv
import html
import random
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

LABELS = ["negative", "neutral", "positive"]
# Data sets whose labels only say "positive rather than negative": no neutral class.
BINARY_SOURCES = {"sst2"}
_NAMES = {name: name for name in LABELS}


@dataclass
class Examples:
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def add(self, text: str, label: str) -> None:
        self.texts.append(text)
        self.labels.append(label)

    def extend(self, other: "Examples") -> None:
        self.texts += other.texts
        self.labels += other.labels

    def __len__(self) -> int:
        return len(self.texts)

    def deduplicated(self) -> "Examples":
        """First occurrence of each text: repeated tweets must not straddle the split."""
        first = {}
        for i, text in enumerate(self.texts):
            first.setdefault(text, i)
        return self.subset(sorted(first.values()))

    def subset(self, indices: list[int]) -> "Examples":
        return Examples([self.texts[i] for i in indices], [self.labels[i] for i in indices])


def read_tweeteval(text_file: Path, labels_file: Path) -> Examples:
    texts = text_file.read_text(encoding="utf-8").splitlines()
    codes = labels_file.read_text(encoding="utf-8").split()
    if len(texts) != len(codes):
        raise ValueError(f"{text_file} has {len(texts)} lines but {labels_file} has {len(codes)}")
    return Examples([t.strip() for t in texts], [LABELS[int(c)] for c in codes])


def read_tsv(path: Path, binary: bool | None = None) -> Examples:
    """``text<TAB>label`` rows; numeric labels are 0/1 (binary) or 0/1/2."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    if rows and not _is_label(rows[0][-1]):
        rows = rows[1:]  # header
    if binary is None:
        binary = {r[-1].strip() for r in rows} <= {"0", "1"}
    out = Examples()
    for row in rows:
        raw = row[-1].strip().lower()
        if raw in _NAMES:
            label = raw
        elif raw.isdigit():
            label = ("negative", "positive")[int(raw)] if binary else LABELS[int(raw)]
        else:
            raise ValueError(f"{path}: unknown label {row[-1]!r}")
        out.add("\t".join(row[:-1]).strip(), label)
    return out


def read_labelled(data: Path, labels: Path | None = None) -> Examples:
    """TweetEval text + labels files when ``labels`` is given, else a TSV file."""
    return read_tweeteval(data, labels) if labels is not None else read_tsv(data)


def _is_label(value: str) -> bool:
    value = value.strip().lower()
    return value in _NAMES or value.isdigit()


def whole_sentences(examples: Examples, min_words: int = 6) -> list[int]:
    """Indices of SST-2 rows that are complete sentences rather than phrases of one.

    SST-2's train split mixes review sentences with their parse-tree phrases; a sentence ends
    with terminal punctuation and is not contained in any longer row.
    """
    token_rows = [t.split() for t in examples.texts]
    by_bigram: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, tokens in enumerate(token_rows):
        for bigram in set(zip(tokens, tokens[1:])):
            by_bigram[bigram].append(i)
    picked = []
    for i, tokens in enumerate(token_rows):
        if len(tokens) < min_words or tokens[-1] not in {".", "!", "?"}:
            continue
        padded = f" {examples.texts[i]} "
        inside_longer = any(
            len(token_rows[j]) > len(tokens) and padded in f" {examples.texts[j]} "
            for j in by_bigram[(tokens[0], tokens[1])]
        )
        if not inside_longer:
            picked.append(i)
    return picked


@dataclass
class Split:
    train: Examples
    train_sources: list[str]  # per training example: which data set it came from
    validation: Examples  # temperature fitting and model selection
    validation_sources: list[str]
    tests: dict[str, Examples]  # held out, reported in the model card

    def validation_by_source(self) -> dict[str, Examples]:
        return {source: self.validation.subset([i for i, s in enumerate(self.validation_sources)
                                                if s == source])
                for source in dict.fromkeys(self.validation_sources)}


# How many SemEval tweets are held out, and how many choose runs and fit the temperature.
SEMEVAL_HELD_OUT = 3000
SEMEVAL_VALIDATION = 1500


def split_shared_data(data_dir: Path, *, seed: int = 13, sst_phrases: int = 6000,
                      airline_train: int = 6000, tweet_repeats: int = 1,
                      sst_sentences: int | None = None, sst_min_words: int = 3,
                      sst_sentence_repeats: int = 1) -> Split:
    """The fixed split of ``../shared/data`` used for training and for the reported figures.

    Held out before anything is trained: all TweetEval validation tweets, a seeded share of the
    SemEval tweets, SST-2 whole sentences and airline tweets. SemEval tweets that are TweetEval
    tweets (matched on ``normalised`` text) never train. The SST-2 and airline rows are split
    as they were before the SemEval tweets came, so their held-out figures stay comparable.
    """
    rng = random.Random(seed)
    train, validation, tests, sources, validation_sources = Examples(), Examples(), {}, [], []

    def add_train(examples: Examples, source: str) -> None:
        train.extend(examples)
        sources.extend([source] * len(examples))

    def add_validation(examples: Examples, source: str) -> None:
        validation.extend(examples)
        validation_sources.extend([source] * len(examples))

    tweets = read_tweeteval(data_dir / "tweeteval_sentiment" / "val_text.txt",
                            data_dir / "tweeteval_sentiment" / "val_labels.txt").deduplicated()
    tests["tweeteval"] = tweets
    _shuffled(len(tweets), rng)  # the draw that once split these tweets keeps later splits fixed

    sst = read_tsv(data_dir / "sst2" / "train.tsv", binary=True).deduplicated()
    sentences = whole_sentences(sst)
    rng.shuffle(sentences)
    tests["sst2_sentences"] = sst.subset(sentences[:1000])
    add_validation(sst.subset(sentences[1000:1300]), "sst2")
    # Held-out figures are on whole sentences, which are few beside the phrases.
    for _ in range(sst_sentence_repeats):
        add_train(sst.subset(sentences[1300:][:sst_sentences]), "sst2")
    # Phrases add vocabulary, but never ones taken from held-out sentences.
    held = [f" {sst.texts[i]} " for i in sentences[:1300]]
    sentence_set = set(sentences)
    phrases = [i for i in _shuffled(len(sst), rng) if i not in sentence_set]
    picked = []
    for i in phrases:
        if len(picked) >= sst_phrases:
            break
        text = sst.texts[i]
        if len(text.split()) >= sst_min_words and not any(f" {text} " in h for h in held):
            picked.append(i)
    add_train(sst.subset(picked), "sst2")

    airline = read_tsv(data_dir / "airline_sentiment" / "tweets.tsv").deduplicated()
    order = _shuffled(len(airline), rng)
    tests["airline"] = airline.subset(order[:1000])
    add_validation(airline.subset(order[1000:1300]), "airline")
    add_train(airline.subset(order[1300 : 1300 + airline_train]), "airline")

    semeval = read_semeval(data_dir, exclude=tweets)
    order = _shuffled(len(semeval), random.Random(f"semeval-{seed}"))
    tests["semeval"] = semeval.subset(order[:SEMEVAL_HELD_OUT])
    add_validation(semeval.subset(order[SEMEVAL_HELD_OUT:][:SEMEVAL_VALIDATION]), "semeval")
    for _ in range(tweet_repeats):
        add_train(semeval.subset(order[SEMEVAL_HELD_OUT + SEMEVAL_VALIDATION:]), "semeval")

    # Nothing held out or validating trains, even written another way (cased, punctuated).
    unseen = {normalised(t) for held_out in tests.values() for t in held_out.texts}
    unseen |= {normalised(t) for t in validation.texts}
    keep = [i for i, text in enumerate(train.texts) if normalised(text) not in unseen]
    return Split(train.subset(keep), [sources[i] for i in keep], validation, validation_sources,
                 tests)


def read_semeval(data_dir: Path, exclude: Examples | None = None) -> Examples:
    """The SemEval-2017 4A tweets, one per normalised text, without those in ``exclude``."""
    tweets = read_tsv(data_dir / "semeval2017_4a" / "tweets.tsv")
    excluded = {normalised(t) for t in (exclude.texts if exclude else [])}
    first: dict[str, int] = {}
    for i, text in enumerate(tweets.texts):
        key = normalised(text)
        if key not in excluded:
            first.setdefault(key, i)
    return tweets.subset(sorted(first.values()))


def normalised(text: str) -> str:
    """A tweet's text as TweetEval and SemEval copies of it agree on: escapes and entities
    decoded, mentions as ``@user``, links dropped, lower case, words and hashtags only."""
    text = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = unicodedata.normalize("NFKC", html.unescape(text))
    text = _LINK.sub(" ", text)
    text = _MENTION.sub("@user", text).lower()
    return " ".join(_NOT_WORD.sub(" ", text).split())


_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_LINK = re.compile(r"https?://\S+|www\.\S+")
_MENTION = re.compile(r"@\w+")
_NOT_WORD = re.compile(r"[^a-z0-9@#]+")


def _shuffled(n: int, rng: random.Random) -> list[int]:
    order = list(range(n))
    rng.shuffle(order)
    return order
