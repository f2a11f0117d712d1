"""Data sources and bad input: synthetic determinism, JSONL/CSV pairs, COCO, Visual Genome, WebDataset,
corrupt/missing images, empty/undecodable/over-long captions, the failure-rate stop."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from train_fixtures import read_metrics, tiny_args

from icmlm_zoo.training.data.synthetic import SyntheticScenes, write_jsonl


def test_synthetic_is_deterministic_and_seeded():
    a, b = SyntheticScenes(6, 48, seed=3), SyntheticScenes(6, 48, seed=3)
    for i in range(6):
        sa, sb = a.scene(i), b.scene(i)
        assert sa["caption"] == sb["caption"] and sa["objects"] == sb["objects"]
        assert np.array_equal(np.asarray(sa["image"]), np.asarray(sb["image"]))
        assert sa["image"].mode == "RGB" and sa["image"].size == (48, 48)
        for o in sa["objects"]:
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
            assert o["color"] in sa["caption"] or o["shape"] in sa["caption"]
    held_out = SyntheticScenes(50, 48, seed=10_000)
    train = SyntheticScenes(50, 48, seed=0)
    assert {held_out.caption(i) for i in range(50)} != {train.caption(i) for i in range(50)}
    assert not any(np.array_equal(np.asarray(held_out.scene(i)["image"]), np.asarray(train.scene(i)["image"]))
                   for i in range(5))
    caps = {train.caption(i).split(" ")[0] for i in range(50)}
    assert len(caps) >= 4  # varied phrasing


def test_write_jsonl_round_trips_through_pairs_loader(tmp_path):
    from icmlm_zoo.training.data.pairs import PairsSource
    from icmlm_zoo.training.data.records import open_image
    scenes = SyntheticScenes(5, 32, seed=1)
    index = write_jsonl(scenes, tmp_path / "syn")
    src = PairsSource(index)
    assert len(src) == 5
    rec = src.record(2)
    assert rec.caption == scenes.caption(2)
    assert np.array_equal(np.asarray(open_image(rec)), np.asarray(scenes.scene(2)["image"]))
    with pytest.raises(FileExistsError):
        write_jsonl(scenes, tmp_path / "syn")


def _builder(text_side, tags=("red", "circle", "square", "giraffe"), max_length=40):
    from torchvision import transforms as T

    from icmlm_zoo.training.data.dataset import SampleBuilder
    from icmlm_zoo.training.masking import CaptionMasker
    masker = CaptionMasker(text_side.tokenizer, list(tags), max_length=max_length)
    tf = T.Compose([T.Resize((32, 32)), T.ToTensor()])
    return SampleBuilder(tf, masker, {w: i for i, w in enumerate(tags)})


def test_bad_samples_are_counted_not_fatal(tmp_path, text_side):
    from icmlm_zoo.training.data.collate import Collator
    from icmlm_zoo.training.data.dataset import ICMLMDataset
    from icmlm_zoo.training.data.pairs import PairsSource
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(good)
    (tmp_path / "corrupt.jpg").write_bytes(b"not an image at all")
    rows = [{"image": "good.png", "caption": "a red circle"},
            {"image": "missing.png", "caption": "a red circle"},
            {"image": "corrupt.jpg", "caption": "a red circle"},
            {"image": "good.png", "caption": "   "},
            {"image": "good.png", "caption": None},
            {"image": "good.png", "caption": "a giraffe " + "very " * 80 + "red square"},
            {"image": "good.png", "caption": "nothing to mask here"}]
    f = tmp_path / "pairs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = ICMLMDataset(PairsSource(f), _builder(text_side, max_length=16))
    batch = Collator(text_side.tokenizer.pad_token_id)([ds[i] for i in range(len(ds))])
    assert batch["errors"] == {"missing_image": 1, "corrupt_image": 1, "empty_caption": 1, "bad_caption": 1}
    assert batch["skipped"] == {"no_tag": 1}
    assert batch["n"] == 2 and batch["truncated"] == 1
    assert batch["input_ids"].shape[1] <= 16
    # the over-long caption: only "giraffe" (kept) may be masked, never the cut-off "red square"
    long_row = batch["labels"][1]
    masked = text_side.tokenizer.convert_ids_to_tokens(long_row[long_row != -100].tolist())
    assert "".join(m.replace("##", "") for m in masked) == "giraffe"


def test_undecodable_caption_bytes(text_side):
    from icmlm_zoo.training.data.records import Record
    b = _builder(text_side)
    out = b(Record(caption=b"\xff\xfe red", image=Image.new("RGB", (8, 8))), 0, 0)
    assert out["error"] == "bad_caption"
    ok = b(Record(caption="a red circle".encode(), image=Image.new("RGB", (8, 8))), 0, 0)
    assert "error" not in ok and ok["masked_words"][0] in ("red", "circle")


def _pairs_run_args(tmp_path, tag_file, n_bad: int, n: int = 24):
    root = tmp_path / "pairs"
    write_jsonl(SyntheticScenes(n, 32, seed=5), root)
    index = root / "captions.jsonl"
    lines = index.read_text().splitlines()
    for i in range(n_bad):
        row = json.loads(lines[i])
        row["image"] = f"images/gone_{i}.png"
        lines[i] = json.dumps(row)
    index.write_text("\n".join(lines) + "\n")
    return tiny_args(tag_file, "--set", "data.kind=pairs", "--set", f"data.pairs.file={index}",
                     "--set", "data.image_size=32", "--set", "run.failure_min_samples=8",
                     "--set", "run.max_failure_rate=0.2", steps=5)


def test_failure_rate_stops_the_run(tmp_path, tag_file, text_side, capsys):
    from icmlm_zoo.training.cli import main
    rc = main(_pairs_run_args(tmp_path, tag_file, n_bad=12) + ["--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "failed to load" in err and "missing_image" in err and "max_failure_rate" in err


def test_few_failures_are_logged_and_training_goes_on(tmp_path, tag_file, text_side):
    from icmlm_zoo.training.cli import main
    run = tmp_path / "run"
    assert main(_pairs_run_args(tmp_path, tag_file, n_bad=1) + ["--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counters"]["failed_missing_image"] >= 1
    assert int(read_metrics(run)[-1]["failed"]) >= 1


def test_coco_and_visual_genome_sources(tmp_path):
    from icmlm_zoo.training.data.coco import CocoCaptions
    from icmlm_zoo.training.data.visual_genome import VisualGenome
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for i in (1, 2):
        Image.new("RGB", (20, 20)).save(img_dir / f"{i:012d}.jpg")
    caps = {"images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "000000000002.jpg"}],
            "annotations": [{"id": 10, "image_id": 1, "caption": "a dog on a couch"},
                            {"id": 11, "image_id": 2, "caption": "two cats"},
                            {"id": 12, "image_id": 1, "caption": "a brown dog"}]}
    inst = {"categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}, {"id": 63, "name": "couch"}],
            "annotations": [{"image_id": 1, "category_id": 18}, {"image_id": 1, "category_id": 63},
                            {"image_id": 2, "category_id": 17}]}
    (tmp_path / "caps.json").write_text(json.dumps(caps))
    (tmp_path / "inst.json").write_text(json.dumps(inst))
    coco = CocoCaptions(tmp_path / "caps.json", img_dir, tmp_path / "inst.json")
    assert len(coco) == 3 and coco.caption(2) == "a brown dog"
    assert coco.record(0).labels == ["couch", "dog"] and coco.label_names() == ["cat", "dog", "couch"]
    vg = [{"id": 1, "regions": [{"phrase": "white dog", "width": 5, "height": 5},
                                {"phrase": "tiny", "width": 1, "height": 1}]}]
    meta = [{"image_id": 1, "url": "https://x/VG_100K/000000000001.jpg", "width": 20, "height": 20}]
    (tmp_path / "regions.json").write_text(json.dumps(vg))
    (tmp_path / "image_data.json").write_text(json.dumps(meta))
    v = VisualGenome(tmp_path / "regions.json", img_dir, tmp_path / "image_data.json", min_region_frac=0.01)
    assert len(v) == 1 and v.caption(0) == "white dog" and v.record(0).image_path.exists()
    from icmlm_zoo.training.tags import read_captions
    assert list(read_captions(tmp_path / "caps.json"))[0] == "a dog on a couch"
    assert list(read_captions(tmp_path / "regions.json")) == ["white dog", "tiny"]


def _shard(path, start, n, bad=()):
    with tarfile.open(path, "w") as tar:
        for i in range(start, start + n):
            buf = io.BytesIO()
            Image.new("RGB", (16, 16), (i, 0, 0)).save(buf, format="PNG")
            files = {"txt": f"a red circle number {i}".encode(),
                     "png": b"garbage" if i in bad else buf.getvalue()}
            for ext, data in files.items():
                info = tarfile.TarInfo(f"s{i:05d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("world", [1, 2])
def test_webdataset_splits_by_rank_and_worker(tmp_path, text_side, world):
    from icmlm_zoo.training.data.collate import Collator
    from icmlm_zoo.training.data.webdataset import WebDatasetStream
    for s in range(4):
        _shard(tmp_path / f"shard-{s}.tar", s * 5, 5, bad=(7,))
    urls = str(tmp_path / "shard-{0..3}.tar")
    seen_per_rank = []
    for rank in range(world):
        ds = WebDatasetStream(urls, _builder(text_side), rank=rank, world_size=world, shuffle=0,
                              epoch_samples=20 // world)
        loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, collate_fn=Collator(0))
        caps, errors = [], 0
        for b in loader:
            caps += b["captions"]
            errors += sum(b["errors"].values())
        seen_per_rank.append(set(caps))
        assert len(caps) + errors == 20 // world
    union = set().union(*seen_per_rank)
    assert sum(len(s) for s in seen_per_rank) == len(union) == 19  # disjoint across ranks; 1 corrupt image


def test_held_out_loader_workers_and_the_workers_memory_policy(text_side):
    """eval.num_workers sets the held-out loader's workers apart from training's (the demo renders its 512
    held-out scenes in the process rather than fork a worker from the grown training process at the end); every
    loader worker gives glibc's defaults back (training/memory.loader_worker_memory)."""
    from icmlm_zoo.training.config import load_config
    from icmlm_zoo.training.data import Collator, SampleBuilder, build_loader
    from icmlm_zoo.training.memory import loader_worker_memory
    loaders = {}
    for over in (["eval.num_workers=null"], ["eval.num_workers=0"]):
        cfg = load_config("demo", None, ["data.num_workers=2", "data.synthetic.num_images=8", "train.batch_size=4",
                                         "data.synthetic.val_images=4", *over])
        builder = SampleBuilder(lambda im: im, None, None)
        loaders[over[0].endswith("0")] = {split: build_loader(cfg, split, builder, Collator(0)).loader
                               for split in ("train", "val")}
    assert loaders[False]["train"].num_workers == loaders[False]["val"].num_workers == 2  # null: data.num_workers
    assert loaders[True]["train"].num_workers == 2 and loaders[True]["val"].num_workers == 0
    assert {d.worker_init_fn for v in loaders.values() for d in v.values()} == {loader_worker_memory}
