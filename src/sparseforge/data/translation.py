"""Parallel corpora for machine translation: a generated toy language pair, user text files, BLEU.

Used by the translation experiments of Zhao et al., "Sparse Spectral Training and Inference on
Euclidean and Hyperbolic Neural Networks", arXiv:2405.15481 (IWSLT'14 with a vanilla and a HyboNet
Transformer, corpus BLEU). Nothing downloads: the offline default is generated.

* :func:`toy_translation` — a deterministic toy language pair (reconstructed default) in which BLEU
  is meaningful because the target is a function of the source that needs reordering, agreement and
  fertility to get right:

  - source: sentences of 5-20 tokens drawn uniformly from a 64-word vocabulary ``s00 .. s63``;
  - reordering: the target is the source reversed;
  - lexicon: every source word maps to a target word through a fixed random bijection (``t..``);
  - fertility: 8 fixed source words expand into two target tokens (their word and a particle ``p..``);
  - agreement: 8 other fixed source words are determiners whose target form (``d..m`` / ``d..f``)
    agrees with the gender of the word that follows them in the source (a fixed random bit per word;
    ``m`` at the end of a sentence).

  The language (bijection, word classes, genders) depends only on ``language_seed``, so every
  split and every sampling ``seed`` share it.
* :func:`load_parallel_text` — user parallel files, one sentence per line (IWSLT-style
  ``train.de`` / ``train.en``), whitespace tokens; optional validation / test file pairs, otherwise the
  last lines are held out. Files with different line counts are a one-line
  :class:`~sparseforge.errors.DataFormatError` naming both files.
* :class:`Vocab` — ``<pad>, <bos>, <eos>, <unk>`` then tokens by frequency (``min_freq``).
* :class:`ParallelBatches` — re-iterable padded (src, tgt) batches, shuffled per epoch, bucketed by
  length, sharded under torchrun; tgt = <bos> y <eos>.
* :func:`corpus_bleu` — corpus BLEU-4 with brevity penalty via sacrebleu on whitespace-joined tokens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import DataFormatError, UserError

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = 0, 1, 2, 3


def tokenize(line: str) -> list[str]:
    """Whitespace tokenisation (the corpora are pre-tokenised, as IWSLT releases usually are)."""
    return line.split()


class Vocab:
    """Token <-> id table with ``<pad>=0, <bos>=1, <eos>=2, <unk>=3``."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.itos = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, sentences: Iterable[str | Sequence[str]], *, min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Tokens seen at least ``min_freq`` times, most frequent first (ties alphabetical)."""
        c: Counter[str] = Counter()
        for s in sentences:
            c.update(tokenize(s) if isinstance(s, str) else s)
        toks = sorted((t for t, n in c.items() if n >= min_freq), key=lambda t: (-c[t], t))
        return cls(toks[:max_size] if max_size is not None else toks)

    def __len__(self) -> int:
        return len(self.itos)

    pad_id, bos_id, eos_id, unk_id = PAD, BOS, EOS, UNK

    def encode(self, sentence: str | Sequence[str], *, bos_eos: bool = False) -> list[int]:
        toks = tokenize(sentence) if isinstance(sentence, str) else sentence
        ids = [self.stoi.get(t, UNK) for t in toks]
        return [BOS, *ids, EOS] if bos_eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Whitespace-joined tokens up to the first <eos>, special tokens dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i >= len(SPECIALS) and i < len(self.itos):
                out.append(self.itos[i])
            elif i == UNK:
                out.append("<unk>")
        return " ".join(out)

    def state_dict(self) -> dict[str, Any]:
        return {"itos": self.itos}

    @classmethod
    def from_state_dict(cls, sd: dict[str, Any]) -> Vocab:
        return cls(sd["itos"][len(SPECIALS):])


@dataclass
class ParallelCorpus:
    """Sentence pairs (source, target strings) per split, and where they came from."""

    train: list[tuple[str, str]]
    valid: list[tuple[str, str]]
    test: list[tuple[str, str]]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "train_pairs": len(self.train), "valid_pairs": len(self.valid),
                "test_pairs": len(self.test)}


# --------------------------------------------------------------------------------------------
# the toy language pair
# --------------------------------------------------------------------------------------------


class ToyLanguage:
    """The deterministic toy language pair of :func:`toy_translation` (see the module docstring).

    Args:
        vocab_size: source words (64).
        n_expand: words translated into two target tokens (8).
        n_agree: determiners whose form agrees with the next word's gender (8).
        language_seed: fixes the bijection, the word classes and the genders.
    """

    def __init__(self, *, vocab_size: int = 64, n_expand: int = 8, n_agree: int = 8, language_seed: int = 0) -> None:
        if vocab_size < 2 or n_expand < 0 or n_agree < 0 or n_expand + n_agree > vocab_size:
            raise UserError(f"toy language needs vocab_size >= 2 and n_expand + n_agree <= vocab_size, got "
                            f"{vocab_size}, {n_expand}, {n_agree}")
        g = torch.Generator().manual_seed(int(language_seed))
        self.vocab_size = vocab_size
        self.lexicon = torch.randperm(vocab_size, generator=g)  # source word -> target word id
        cls = torch.randperm(vocab_size, generator=g)
        self.expand = set(cls[:n_expand].tolist())
        self.agree = set(cls[n_expand:n_expand + n_agree].tolist())
        self.particle = {w: j for j, w in enumerate(sorted(self.expand))}
        self.det = {w: j for j, w in enumerate(sorted(self.agree))}
        self.gender = torch.randint(0, 2, (vocab_size,), generator=g).tolist()
        w = len(str(vocab_size - 1))
        self._src = [f"s{i:0{w}d}" for i in range(vocab_size)]
        self._tgt = [f"t{i:0{w}d}" for i in range(vocab_size)]

    def translate_ids(self, src: Sequence[int]) -> list[str]:
        """Target tokens of a source sentence given as word ids."""
        out: list[str] = []
        n = len(src)
        for pos in range(n - 1, -1, -1):  # reversed order
            wd = int(src[pos])
            if wd in self.det:
                nxt = int(src[pos + 1]) if pos + 1 < n else None
                out.append(f"d{self.det[wd]}{'f' if nxt is not None and self.gender[nxt] else 'm'}")
                continue
            out.append(self._tgt[int(self.lexicon[wd])])
            if wd in self.particle:
                out.append(f"p{self.particle[wd]}")
        return out

    def sample(self, n_pairs: int, *, seed: int = 0, min_len: int = 5, max_len: int = 20) -> list[tuple[str, str]]:
        """``n_pairs`` random (source, target) sentence pairs."""
        if not 1 <= min_len <= max_len:
            raise UserError(f"toy sentence lengths need 1 <= min_len <= max_len, got {min_len}, {max_len}")
        g = torch.Generator().manual_seed(int(seed))
        lens = torch.randint(min_len, max_len + 1, (n_pairs,), generator=g).tolist()
        words = torch.randint(0, self.vocab_size, (sum(lens),), generator=g).tolist()
        pairs, i = [], 0
        for ln in lens:
            s = words[i:i + ln]
            i += ln
            pairs.append((" ".join(self._src[w] for w in s), " ".join(self.translate_ids(s))))
        return pairs


def toy_translation(n_pairs: int = 20_000, *, seed: int = 0, language_seed: int = 0, valid: int | None = None,
                    test: int | None = None, min_len: int = 5, max_len: int = 20, vocab_size: int = 64,
                    n_expand: int = 8, n_agree: int = 8) -> ParallelCorpus:
    """The generated default corpus: ``n_pairs`` training pairs plus validation / test pairs.

    ``valid`` / ``test`` default to 10% of ``n_pairs`` each (at least 50, at most 1000). Splits are
    drawn from different seeds of the same language.
    """
    if n_pairs < 1:
        raise UserError(f"n_pairs must be >= 1, got {n_pairs}")
    lang = ToyLanguage(vocab_size=vocab_size, n_expand=n_expand, n_agree=n_agree, language_seed=language_seed)
    nv = valid if valid is not None else min(1000, max(50, n_pairs // 10))
    nt = test if test is not None else min(1000, max(50, n_pairs // 10))
    kw = {"min_len": min_len, "max_len": max_len}
    base = 1_000_003 * int(seed)
    return ParallelCorpus(train=lang.sample(n_pairs, seed=base + 1, **kw), valid=lang.sample(nv, seed=base + 2, **kw),
                          test=lang.sample(nt, seed=base + 3, **kw), source="toy_translation",
                          meta={"language_seed": language_seed, "seed": seed, "vocab_size": vocab_size,
                                "n_expand": n_expand, "n_agree": n_agree, "min_len": min_len, "max_len": max_len})


# --------------------------------------------------------------------------------------------
# user files
# --------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataFormatError(f"parallel text file {path} is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"parallel text file {path} is not UTF-8 (byte {e.start}); re-encode it") from None
    return text.splitlines()


def read_parallel(src_path: str | Path, tgt_path: str | Path, *, lowercase: bool = False,
                  max_len: int | None = None) -> list[tuple[str, str]]:
    """Aligned (source, target) lines of two files; empty pairs and pairs over ``max_len`` tokens dropped."""
    sp, tp = Path(src_path), Path(tgt_path)
    a, b = _read_lines(sp), _read_lines(tp)
    if len(a) != len(b):
        raise DataFormatError(f"parallel files differ in length: {sp} has {len(a)} lines, {tp} has {len(b)}; "
                              "they must be aligned one sentence per line")
    out = []
    for s, t in zip(a, b):
        s, t = " ".join(s.split()), " ".join(t.split())
        if lowercase:
            s, t = s.lower(), t.lower()
        if not s or not t:
            continue
        if max_len is not None and (len(s.split()) > max_len or len(t.split()) > max_len):
            continue
        out.append((s, t))
    if not out:
        raise DataFormatError(f"parallel files {sp} / {tp} hold no non-empty sentence pair")
    return out


def load_parallel_text(src_path: str | Path, tgt_path: str | Path, *,
                       valid: tuple[str | Path, str | Path] | None = None,
                       test: tuple[str | Path, str | Path] | None = None, holdout: float = 0.05,
                       lowercase: bool = False, max_len: int | None = None) -> ParallelCorpus:
    """A :class:`ParallelCorpus` from user files, one sentence per line.

    ``valid`` / ``test`` are (source file, target file) pairs; a missing one is carved from the end
    of the training files (``holdout`` of the lines each; test sentences are never filtered by length).
    """
    train = read_parallel(src_path, tgt_path, lowercase=lowercase, max_len=max_len)
    n_hold = max(1, int(round(holdout * len(train))))
    te = read_parallel(*test, lowercase=lowercase) if test is not None else None
    if te is None:
        if len(train) < 3:
            raise DataFormatError(f"{src_path} has {len(train)} usable pairs: too few to hold out a test split")
        train, te = train[:-n_hold], train[-n_hold:]
    va = read_parallel(*valid, lowercase=lowercase) if valid is not None else None
    if va is None:
        if len(train) < 2:
            raise DataFormatError(f"{src_path} has too few pairs to hold out a validation split")
        train, va = train[:-n_hold], train[-n_hold:]
    return ParallelCorpus(train=train, valid=va, test=te, source=f"{src_path} | {tgt_path}",
                          meta={"lowercase": lowercase, "max_len": max_len})


def load_parallel_dir(root: str | Path, src_lang: str, tgt_lang: str, **kw: Any) -> ParallelCorpus:
    """IWSLT-style folder: ``train.{src}``/``train.{tgt}``, optional ``valid.*`` (or ``dev.*``) and ``test.*``."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"parallel corpus folder {root} does not exist")

    def pair(split: str) -> tuple[Path, Path] | None:
        s, t = root / f"{split}.{src_lang}", root / f"{split}.{tgt_lang}"
        return (s, t) if s.is_file() and t.is_file() else None

    tr = pair("train")
    if tr is None:
        raise DataFormatError(f"{root} has no train.{src_lang} / train.{tgt_lang} pair")
    return load_parallel_text(*tr, valid=pair("valid") or pair("dev"), test=pair("test"), **kw)


# --------------------------------------------------------------------------------------------
# batches and BLEU
# --------------------------------------------------------------------------------------------


def encode_pairs(pairs: Sequence[tuple[str, str]], src_vocab: Vocab, tgt_vocab: Vocab) -> tuple[list[list[int]], list[list[int]]]:
    """Source ids + <eos> (fairseq's source format: the end marker helps reordering) and <bos> target <eos> ids."""
    return [[*src_vocab.encode(s), EOS] for s, _ in pairs], [tgt_vocab.encode(t, bos_eos=True) for _, t in pairs]


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = PAD) -> torch.Tensor:
    """(B, T_max) int64, right-padded."""
    T = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), max(T, 1)), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


class ParallelBatches:
    """Padded (src (B, S), tgt (B, T)) batches; a new shuffle each epoch, similar lengths together.

    Args:
        src / tgt: id lists (tgt with <bos>/<eos>).
        batch_size: sentences per batch.
        seed: shuffling seed (epoch e uses seed + e); identical on every rank.
        bucket: sort each window of ``bucket`` batches by length before cutting batches.
        rank / world_size: this process' shard (batches are dealt round-robin).
    """

    def __init__(self, src: list[list[int]], tgt: list[list[int]], *, batch_size: int = 64, seed: int = 0,
                 bucket: int = 20, pad_id: int = PAD, rank: int | None = None, world_size: int | None = None) -> None:
        if len(src) != len(tgt) or not src:
            raise UserError(f"ParallelBatches needs as many (>= 1) sources as targets, got {len(src)} / {len(tgt)}")
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        from ..engine import distributed as D

        self.src, self.tgt, self.batch_size, self.seed, self.bucket, self.pad_id = src, tgt, batch_size, seed, bucket, pad_id
        self.rank = D.rank() if rank is None else rank
        self.world_size = D.world_size() if world_size is None else world_size
        self.epoch = 0

    def __len__(self) -> int:
        n_batches = -(-len(self.src) // self.batch_size)
        return max(1, n_batches // self.world_size)

    def batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(int(self.seed) + int(epoch))
        perm = torch.randperm(len(self.src), generator=g).tolist()
        w = self.batch_size * max(1, self.bucket)
        out = []
        for i in range(0, len(perm), w):
            chunk = sorted(perm[i:i + w], key=lambda j: (len(self.src[j]), len(self.tgt[j])))
            out += [chunk[k:k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        order = torch.randperm(len(out), generator=g).tolist()
        out = [out[i] for i in order]
        n = len(self)
        return [out[(r * self.world_size + self.rank) % len(out)] for r in range(n)]

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (``engine.fit`` calls it, so a resume replays the same batches)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in self.batches(self.epoch):
            yield pad_sequences([self.src[i] for i in b], self.pad_id), pad_sequences([self.tgt[i] for i in b], self.pad_id)
        self.epoch += 1


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], *, tokenize: str = "13a") -> float:
    """Corpus BLEU-4 (0-100, brevity penalty included) of detokenised hypothesis / reference strings (sacrebleu)."""
    if len(hypotheses) != len(references):
        raise UserError(f"BLEU needs one hypothesis per reference, got {len(hypotheses)} / {len(references)}")
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score)


__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SPECIALS",
    "UNK",
    "ParallelBatches",
    "ParallelCorpus",
    "ToyLanguage",
    "Vocab",
    "corpus_bleu",
    "encode_pairs",
    "load_parallel_dir",
    "load_parallel_text",
    "pad_sequences",
    "read_parallel",
    "tokenize",
    "toy_translation",
]
