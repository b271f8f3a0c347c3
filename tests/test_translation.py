"""Translation data: the toy language pair, vocabularies, parallel text files, batches, BLEU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sparseforge.data.translation import (
    BOS,
    EOS,
    PAD,
    UNK,
    ParallelBatches,
    ToyLanguage,
    Vocab,
    corpus_bleu,
    encode_pairs,
    load_parallel_dir,
    load_parallel_text,
    pad_sequences,
    read_parallel,
    toy_translation,
)
from sparseforge.errors import DataFormatError, UserError


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_bleu_of_a_copy_is_100_and_of_garbage_is_low() -> None:
    refs = ["t01 t02 t03 t04 p1", "d3f t09 t10 t11 t12 t13"]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert corpus_bleu(["t99 t98", "t97"], refs) < 5
    assert 0 < corpus_bleu([refs[0], "d3f t09 t10 t11"], refs) < 100  # brevity penalty and n-gram precision
    with pytest.raises(UserError):
        corpus_bleu(refs, refs[:1])


def test_toy_language_rules() -> None:
    lang = ToyLanguage(language_seed=0)
    plain = [w for w in range(64) if w not in lang.expand and w not in lang.agree][:3]
    e, (det,) = sorted(lang.expand)[0], sorted(lang.agree)[:1]
    out = lang.translate_ids([plain[0], plain[1], e])
    assert out[:2] == [f"t{int(lang.lexicon[e]):02d}", f"p{lang.particle[e]}"]  # reversed; e expands
    assert out[2:] == [f"t{int(lang.lexicon[plain[1]]):02d}", f"t{int(lang.lexicon[plain[0]]):02d}"]
    noun_f = next(w for w in plain if lang.gender[w] == 1)
    noun_m = next(w for w in plain if lang.gender[w] == 0)
    assert lang.translate_ids([det, noun_f])[-1] == f"d{lang.det[det]}f"  # agreement with the next word
    assert lang.translate_ids([det, noun_m])[-1] == f"d{lang.det[det]}m"
    assert lang.translate_ids([noun_f, det])[0] == f"d{lang.det[det]}m"  # sentence-final determiner
    assert sorted(lang.lexicon.tolist()) == list(range(64))  # a bijection
    assert not lang.expand & lang.agree and len(lang.expand) == len(lang.agree) == 8


def test_toy_translation_is_deterministic_and_shares_one_language() -> None:
    a, b = toy_translation(300, seed=1), toy_translation(300, seed=1)
    assert a.train == b.train and a.test == b.test
    c = toy_translation(300, seed=2)
    assert c.train != a.train
    lang = ToyLanguage(language_seed=0)
    for s, t in a.train[:50] + c.test[:50]:  # every split of every seed follows the same rules
        ids = [int(w[1:]) for w in s.split()]
        assert 5 <= len(ids) <= 20 and t == " ".join(lang.translate_ids(ids))
    assert len(a.valid) == len(a.test) == 50
    assert toy_translation(50, language_seed=3).train != toy_translation(50, language_seed=4).train


def test_vocab_encode_decode() -> None:
    v = Vocab.build(["a b b", "b c"], min_freq=1)
    assert v.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and v.itos[4] == "b"
    assert v.encode("a b zz", bos_eos=True) == [BOS, v.stoi["a"], v.stoi["b"], UNK, EOS]
    assert v.decode([v.stoi["a"], PAD, v.stoi["c"], EOS, v.stoi["b"]]) == "a c"
    assert "a" not in Vocab.build(["a b b", "b c c"], min_freq=2).stoi
    assert Vocab.from_state_dict(v.state_dict()).itos == v.itos


def test_parallel_text_round_trip_and_bad_input(tmp_path: Path) -> None:
    corpus = toy_translation(60, seed=0)
    src, tgt = tmp_path / "train.de", tmp_path / "train.en"
    src.write_text("".join(s + "\n" for s, _ in corpus.train))
    tgt.write_text("".join(t + "\n" for _, t in corpus.train))
    assert read_parallel(src, tgt) == corpus.train
    loaded = load_parallel_text(src, tgt, holdout=0.1)
    assert loaded.train + loaded.valid + loaded.test == corpus.train and len(loaded.test) == 6
    for split in ("valid", "test"):
        (tmp_path / f"{split}.de").write_text("s01 s02\n")
        (tmp_path / f"{split}.en").write_text("t02 t01\n")
    d = load_parallel_dir(tmp_path, "de", "en")
    assert d.test == [("s01 s02", "t02 t01")] and d.train == corpus.train
    (tmp_path / "short.en").write_text("one line\n")
    with pytest.raises(DataFormatError) as e:
        read_parallel(src, tmp_path / "short.en")
    msg = one_line(e)
    assert "train.de" in msg and "short.en" in msg and "60" in msg
    with pytest.raises(DataFormatError) as e:
        read_parallel(tmp_path / "missing.de", tgt)
    assert "missing.de" in one_line(e)
    (tmp_path / "bin.de").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataFormatError) as e:
        read_parallel(tmp_path / "bin.de", tgt)
    assert "UTF-8" in one_line(e)
    assert read_parallel(src, tgt, max_len=8) == [p for p in corpus.train if max(len(p[0].split()), len(p[1].split())) <= 8]


def test_parallel_batches_cover_every_pair_once_per_epoch_and_pad() -> None:
    corpus = toy_translation(130, seed=0)
    sv, tv = Vocab.build([s for s, _ in corpus.train]), Vocab.build([t for _, t in corpus.train])
    src, tgt = encode_pairs(corpus.train, sv, tv)
    assert all(s[-1] == EOS for s in src) and all(t[0] == BOS and t[-1] == EOS for t in tgt)
    b = ParallelBatches(src, tgt, batch_size=16, seed=0, rank=0, world_size=1)
    seen = []
    for xs, ys in b:
        assert xs.shape[0] == ys.shape[0] <= 16 and xs.dtype == torch.long
        for row in xs.tolist():
            seen.append(tuple(t for t in row if t != PAD))
    assert sorted(seen) == sorted(tuple(s) for s in src)
    assert [list(x) for x in b.batches(3)] == [list(x) for x in b.batches(3)] and b.batches(3) != b.batches(4)
    shards = [ParallelBatches(src, tgt, batch_size=16, seed=0, rank=r, world_size=2).batches(0) for r in (0, 1)]
    assert not {i for bb in shards[0] for i in bb} & {i for bb in shards[1] for i in bb}
    assert pad_sequences([[5, 6], [7]]).tolist() == [[5, 6], [7, PAD]]
