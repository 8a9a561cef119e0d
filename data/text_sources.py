"""Sentence-pair sources for the translation pipeline, chosen by ``data.source``.

``synthetic`` (built-in dates task), ``tsv:FILE`` (Anki / Tatoeba: ``first<TAB>second[<TAB>...]``)
and ``tfds:NAME`` (a TFDS translation set, e.g. ``ted_hrlr_translate/pt_to_en``). Each returns the
pairs in ``(first, second)`` column order; ``data.direction`` then picks the source side. Lines
that cannot be used are returned with the reason, never dropped silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.checks import check
from data.fingerprints import file_state
from data.registry import Registry
from data.synthetic_text import WRITERS, generate_dates
from data.text import TextConfig, clean

TEXT_SOURCES: Registry[Callable[..., PairListing]] = Registry("text source")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SyntheticTextConfig:
    """Settings of the built-in ``synthetic`` dates task.

    Attributes:
        examples: pairs generated (before de-duplication and splitting).
        first_year: earliest year of a generated date.
        last_year: latest year (the range must span less than 100 years).
        styles: writing styles used: en, fr, es, de, numeric.
    """

    examples: int = 24000
    first_year: int = 1950
    last_year: int = 2049
    styles: tuple[str, ...] = tuple(WRITERS)

    def __post_init__(self) -> None:
        check(self.examples >= 10, "data.synthetic.examples", self.examples, ">= 10")
        check(
            0 <= self.last_year - self.first_year < 100,
            "data.synthetic.last_year",
            (self.first_year, self.last_year),
            "first_year <= last_year < first_year + 100",
        )
        unknown = sorted(set(self.styles) - set(WRITERS))
        check(not unknown, "data.synthetic.styles", list(self.styles), f"some of {sorted(WRITERS)}")


@dataclass(frozen=True)
class TextDataConfig:
    """The ``data`` section of the translation pipeline.

    Attributes:
        source: ``synthetic``, ``tsv:FILE`` or ``tfds:NAME``.
        direction: ``forward`` translates the first column (or TFDS input) into the second;
            ``reverse`` the second into the first (Tatoeba's spa.txt is English first, so
            Spanish -> English is ``reverse``).
        val_percent: share of source sentences in validation (by a hash of the source sentence).
        test_percent: share in test.
        max_pairs: keep at most this many pairs after cleaning (0 = all); a seeded sample.
        tfds_split: the TFDS split(s) read for ``tfds:`` sources.
        max_rejected_percent: stop before training when more than this percentage of the lines
            is unusable (malformed, not UTF-8, an empty side); filters by design (too long,
            duplicate, over ``max_pairs``) do not count.
        synthetic: settings of the built-in task.
    """

    source: str = "synthetic"
    direction: str = "forward"
    val_percent: float = 5.0
    test_percent: float = 5.0
    max_pairs: int = 0
    tfds_split: str = "train+validation+test"
    max_rejected_percent: float = 5.0
    synthetic: SyntheticTextConfig = field(default_factory=SyntheticTextConfig)

    def __post_init__(self) -> None:
        name = self.source.split(":", 1)[0]
        check(name in TEXT_SOURCES, "data.source", self.source, f"one of {TEXT_SOURCES.names()}")
        check(
            self.direction in ("forward", "reverse"),
            "data.direction",
            self.direction,
            "forward or reverse",
        )
        for key in ("val_percent", "test_percent"):
            value = getattr(self, key)
            check(0 < value < 50, f"data.{key}", value, "a percentage in (0, 50)")
        check(self.max_pairs >= 0, "data.max_pairs", self.max_pairs, ">= 0 (0 = all)")
        check(
            0 <= self.max_rejected_percent <= 100,
            "data.max_rejected_percent",
            self.max_rejected_percent,
            "a percentage in [0, 100]",
        )


RawPair = tuple[str, str, str]  # (first column, second column, origin)
Rejection = dict[str, Any]  # {"item", "kind", "reason"[, "count"]}


@dataclass
class PairListing:
    """Raw pairs in column order with where each came from, and the lines that were unusable."""

    pairs: list[RawPair] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


@TEXT_SOURCES.register("synthetic")
def _synthetic(argument: str, config: TextDataConfig, seed: int) -> Iterator[RawPair | Rejection]:
    s = config.synthetic
    pairs = generate_dates(s.examples, seed, s.first_year, s.last_year, s.styles)
    for i, (a, b) in enumerate(pairs):
        yield a, b, f"synthetic:{i}"


def _lines(path: Path, block: int = 1 << 20) -> Iterator[bytes]:
    """The lines of a file, read in blocks, split as ``bytes.splitlines`` splits them.

    Unix, Windows and old Mac line endings (not Unicode separators); a leading UTF-8 byte-order
    mark is dropped (it is not part of the text).
    """
    with path.open("rb") as handle:
        carry = handle.read(3)
        if carry == b"\xef\xbb\xbf":
            carry = b""
        while chunk := handle.read(block):
            parts = (carry + chunk).splitlines(keepends=True)
            # the last part may continue in the next block (a "\r" may be half of "\r\n")
            carry = parts.pop() if parts else b""
            for part in parts:
                yield part.rstrip(b"\r\n")
    if carry:
        yield carry.rstrip(b"\r\n")


@TEXT_SOURCES.register("tsv")
def _tsv(argument: str, config: TextDataConfig, seed: int) -> Iterator[RawPair | Rejection]:
    path = Path(argument)
    if not argument or not path.is_file():
        raise FileNotFoundError(
            f"data.source tsv:{argument}: no such file. Expected tsv:PATH to a file of "
            "'first<TAB>second[<TAB>attribution]' lines (Anki / Tatoeba format)."
        )
    return _tsv_lines(path)


def _tsv_lines(path: Path) -> Iterator[RawPair | Rejection]:
    for number, line_bytes in enumerate(_lines(path), start=1):
        origin = f"{path.name}:{number}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as err:
            yield {"item": origin, "kind": "not UTF-8", "reason": f"not UTF-8 ({err.reason})"}
            continue
        if not line.strip(" \r\n"):
            continue  # blank lines (e.g. the final newline) are not data; a lone tab is a pair
        columns = line.split("\t")
        if not 2 <= len(columns) <= 3:
            yield {
                "item": origin,
                "kind": "malformed line",
                "reason": f"{len(columns)} column(s); expected 2 or 3 tab-separated",
            }
            continue
        yield columns[0], columns[1], origin


@TEXT_SOURCES.register("tfds")
def _tfds(argument: str, config: TextDataConfig, seed: int) -> Iterator[RawPair | Rejection]:
    import tensorflow_datasets as tfds

    if not argument:
        raise ValueError(
            "data.source tfds:NAME needs a dataset name, e.g. tfds:ted_hrlr_translate/pt_to_en"
        )
    ds = tfds.load(argument, split=config.tfds_split, as_supervised=True)
    return (
        (first.decode("utf-8"), second.decode("utf-8"), f"{argument}:{i}")
        for i, (first, second) in enumerate(tfds.as_numpy(ds))
    )


def iter_source(config: TextDataConfig, seed: int) -> Iterator[RawPair | Rejection]:
    """The configured source's raw pairs and unusable lines (dicts), one at a time, in order.

    Raises at once (not on the first ``next``) when the source cannot be opened.
    """
    name, _, argument = config.source.partition(":")
    return TEXT_SOURCES.get(name)(argument, config, seed)


def list_pairs(config: TextDataConfig, seed: int) -> PairListing:
    """Reads the whole configured source into memory (small data, tests, benchmarks)."""
    listing = PairListing()
    for item in iter_source(config, seed):
        (listing.rejected if isinstance(item, dict) else listing.pairs).append(item)
    return listing


def source_state(config: TextDataConfig) -> str:
    """The content hash of a ``tsv:`` file, for the ingest stage's fingerprint.

    ``synthetic`` and ``tfds`` sources are described by the config: their state is "".
    """
    name, _, argument = config.source.partition(":")
    return file_state(Path(argument).expanduser()) if name == "tsv" else ""


UNUSABLE = ("not UTF-8", "malformed line", "empty source", "empty target")  # vs. filters


def split_of(source_sentence: str, val_percent: float, test_percent: float) -> str:
    """Deterministic split from a hash of the source sentence (never two splits for one source)."""
    digest = hashlib.sha1(source_sentence.encode("utf-8")).hexdigest()
    bucket = int(digest[:8], 16) % 10000 / 100.0
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + val_percent:
        return "validation"
    return "train"


def filter_pairs(
    items: Iterable[RawPair | Rejection],
    data: TextDataConfig,
    text: TextConfig,
    token_counts: Callable[[list[str], str], list[int]],
    batch: int = 4096,
) -> Iterator[dict[str, Any]]:
    """Cleans, orients, length-filters and de-duplicates pairs as they stream past.

    Args:
        items: raw pairs and the source's rejections (``iter_source``).
        data: direction and split percentages.
        text: cleaning settings and length limits.
        token_counts: number of tokens of each sentence of a side (the model's own tokenizer),
            called on ``batch`` sentences at a time.
        batch: pairs cleaned and counted together.

    Yields:
        Kept pairs (``source``, ``target``, ``split``, ``origin``) and rejections (``item``,
        ``kind``, ``reason``), in input order within a batch. Memory is one batch plus a 16-byte
        digest per distinct kept pair (for de-duplication).
    """
    seen: set[bytes] = set()
    pending: list[tuple[str, str, str]] = []

    def flush() -> Iterator[dict[str, Any]]:
        n_src = token_counts([p[0] for p in pending], "source")
        n_tgt = token_counts([p[1] for p in pending], "target")
        for (source, target, origin), ns, nt in zip(pending, n_src, n_tgt, strict=True):
            for side, n, limit in (
                ("source", ns, text.max_source_tokens),
                ("target", nt, text.max_target_tokens),
            ):
                if n > limit:
                    yield {
                        "item": origin,
                        "kind": f"{side} too long",
                        "reason": f"{side} has {n} tokens > text.max_{side}_tokens={limit}",
                    }
                    break
            else:
                digest = hashlib.blake2b(
                    f"{source}\t{target}".encode("utf-8", "surrogatepass"), digest_size=16
                ).digest()
                if digest in seen:
                    yield {"item": origin, "kind": "duplicate pair", "reason": "duplicate pair"}
                    continue
                seen.add(digest)
                yield {
                    "source": source,
                    "target": target,
                    "split": split_of(source, data.val_percent, data.test_percent),
                    "origin": origin,
                }
        pending.clear()

    for item in items:
        if isinstance(item, dict):
            yield item
            continue
        first, second, origin = item
        if data.direction == "reverse":
            first, second = second, first
        source, target = clean(first, text, "source"), clean(second, text, "target")
        if not source or not target:
            side = "source" if not source else "target"
            yield {
                "item": origin,
                "kind": f"empty {side}",
                "reason": f"empty {side} after cleaning",
            }
            continue
        pending.append((source, target, origin))
        if len(pending) >= batch:
            yield from flush()
    if pending:
        yield from flush()


def is_rejection(record: dict[str, Any]) -> bool:
    """Whether a ``filter_pairs`` record is a rejection rather than a kept pair."""
    return "kind" in record


def sample_indices(kept: int, max_pairs: int, seed: int) -> tuple[set[int] | None, Rejection]:
    """Which of ``kept`` pairs ``data.max_pairs`` keeps (a seeded sample), and the record of the rest.

    Returns ``(None, {})`` when every pair is kept.
    """
    import random

    if not max_pairs or kept <= max_pairs:
        return None, {}
    order = list(range(kept))
    random.Random(seed).shuffle(order)
    dropped = kept - max_pairs
    return set(order[:max_pairs]), {
        "item": f"{dropped} pairs",
        "kind": "over data.max_pairs",
        "reason": f"left out by data.max_pairs={max_pairs} (a seeded sample is kept)",
        "count": dropped,
    }


def prepare_pairs(
    listing: PairListing,
    data: TextDataConfig,
    text: TextConfig,
    token_counts: Callable[[list[str], str], list[int]],
    seed: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``filter_pairs`` and the ``max_pairs`` sample over a listing held in memory.

    Args:
        listing: raw pairs from a source.
        data: direction, split percentages and sample size.
        text: cleaning settings and length limits.
        token_counts: number of tokens of each sentence of a side (the model's own tokenizer).
        seed: for the ``max_pairs`` sample.

    Returns:
        Kept pairs (``source``, ``target``, ``split``, ``origin``) and rejected items with reasons.
    """
    kept, rejected = [], []
    for record in filter_pairs([*listing.rejected, *listing.pairs], data, text, token_counts):
        (rejected if is_rejection(record) else kept).append(record)
    chosen, record = sample_indices(len(kept), data.max_pairs, seed)
    if chosen is not None:
        kept = [p for i, p in enumerate(kept) if i in chosen]
        rejected.append(record)
    return kept, rejected
