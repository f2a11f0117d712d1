"""WebDataset streaming: per-epoch shard shuffling (seeded, disjoint across ranks and workers), resampled shards
with an exact epoch length, and a trainer run on shards that is stopped and resumed equal to an uninterrupted one."""
from __future__ import annotations

import pytest
import torch
from test_train_data import _shard
from train_fixtures import tiny_args

from icmlm_zoo.training.data.webdataset import WebDatasetStream

N_SHARDS, PER_SHARD = 8, 3


@pytest.fixture()
def urls(tmp_path):
    for s in range(N_SHARDS):
        _shard(tmp_path / f"shard-{s}.tar", s * PER_SHARD, PER_SHARD)
    return str(tmp_path / f"shard-{{0..{N_SHARDS - 1}}}.tar")


def _caption(rec, key, epoch):
    """A stand-in SampleBuilder: the sample's number (the shard is number // PER_SHARD)."""
    return int(rec.caption.decode().rsplit(" ", 1)[1])


def _read(urls, epoch=0, workers=0, **kw):
    kw = {"shuffle": 0, "epoch_samples": N_SHARDS * PER_SHARD, **kw}
    ds = WebDatasetStream(urls, _caption, **kw)
    ds.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    return [int(x) for x in loader]


def _shard_order(samples):
    return [s // PER_SHARD for s in samples[::PER_SHARD]]


def test_shard_order_changes_per_epoch_and_repeats_for_the_seed(urls):
    e0, e1 = _read(urls, 0, seed=3), _read(urls, 1, seed=3)
    assert sorted(e0) == sorted(e1) == list(range(N_SHARDS * PER_SHARD))  # each epoch reads every sample once
    assert _shard_order(e0) != _shard_order(e1) != list(range(N_SHARDS))
    assert _read(urls, 1, seed=3) == e1  # same seed and epoch: the same stream
    assert _read(urls, 1, seed=4) != e1
    assert _read(urls, 1, seed=3, shard_shuffle=False) == list(range(N_SHARDS * PER_SHARD))
    buffered = _read(urls, 1, seed=3, shard_shuffle=4)  # a shard shuffle buffer instead of a full permutation
    assert sorted(buffered) == list(range(N_SHARDS * PER_SHARD)) and buffered == _read(urls, 1, seed=3, shard_shuffle=4)
    assert _shard_order(buffered) != list(range(N_SHARDS))


@pytest.mark.parametrize("shard_shuffle", [True, 3])
def test_ranks_and_workers_get_disjoint_shards_that_rotate_across_epochs(urls, shard_shuffle):
    shares = {}
    for epoch in (0, 1):
        seen = [_read(urls, epoch, workers=2, rank=r, world_size=2, shard_shuffle=shard_shuffle, shuffle=5,
                      epoch_samples=N_SHARDS * PER_SHARD // 2) for r in (0, 1)]
        assert sorted(seen[0] + seen[1]) == list(range(N_SHARDS * PER_SHARD))  # disjoint and complete
        shares[epoch] = set(seen[0])
    assert shares[0] != shares[1]  # rank 0 reads other shards in the next epoch


@pytest.mark.parametrize("workers, epoch_samples", [(0, 10), (2, 11), (2, 40)])
def test_resampled_yields_exactly_the_epoch_length_reproducibly(urls, workers, epoch_samples):
    run = _read(urls, 0, workers=workers, resampled=True, seed=7, epoch_samples=epoch_samples)
    assert len(run) == epoch_samples
    assert _read(urls, 0, workers=workers, resampled=True, seed=7, epoch_samples=epoch_samples) == run
    assert _read(urls, 1, workers=workers, resampled=True, seed=7, epoch_samples=epoch_samples) != run
    other_rank = _read(urls, 0, workers=workers, resampled=True, seed=7, epoch_samples=epoch_samples, rank=1,
                       world_size=2)
    assert other_rank != run  # every rank/worker draws with its own seed
    if epoch_samples > N_SHARDS * PER_SHARD:
        assert len(set(run)) < len(run)  # drawn with replacement


def test_config_keys_are_typed():
    from icmlm_zoo.training.config import ConfigError, load_config
    cfg = load_config("demo", overrides=["data.webdataset.shard_shuffle=64", "data.webdataset.resampled=true"])
    assert cfg.data.webdataset.shard_shuffle == 64 and cfg.data.webdataset.resampled is True
    assert load_config("demo").data.webdataset.shard_shuffle is True
    with pytest.raises(ConfigError, match=r"shard_shuffle='x' is not valid: expected true or false or an integer"):
        load_config("demo", overrides=["data.webdataset.shard_shuffle=x"])
    with pytest.raises(ConfigError, match=r"data.webdataset.resampled=3 is not valid: expected true or false"):
        load_config("demo", overrides=["data.webdataset.resampled=3"])


@pytest.mark.parametrize("resampled", [False, True])
def test_trainer_on_shards_stopped_and_resumed_equals_uninterrupted(tmp_path, urls, tag_file, text_side, resampled):
    from icmlm_zoo.training.checkpoint import load_checkpoint, resolve_checkpoint
    from icmlm_zoo.training.cli import main
    # 8 samples / batch 4 = 2 batches per epoch: stopped at step 1, the resumed run reads past the consumed
    # batch of epoch 0, then crosses into epoch 1 (reshuffled/redrawn shards)
    sets = {"data.kind": "webdataset", "data.webdataset.urls": urls, "data.webdataset.epoch_samples": 8,
            "data.webdataset.shuffle": 6, "data.webdataset.resampled": str(resampled).lower(),
            "data.num_workers": 2, "data.image_size": 32, "eval.at_end": "false"}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(tiny_args(tag_file, "--out", str(a), *args, steps=3)) == 0
    assert main(tiny_args(tag_file, "--out", str(b), "--set", "run.stop_after=1", *args, steps=3)) == 0
    assert load_checkpoint(resolve_checkpoint(b))["step"] == 1
    assert main(["--out", str(b), "--resume"]) == 0
    sa, sb = load_checkpoint(resolve_checkpoint(a)), load_checkpoint(resolve_checkpoint(b))
    assert sa["step"] == sb["step"] == 3
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
