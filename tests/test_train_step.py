"""The training step the trainer runs and the benchmarks time (training/step.py), and the one image-transform
factory (icmlm_zoo/transforms.py) that training, evaluation and the probes share."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from icmlm_zoo.training.step import TrainStep


class _Regression(torch.nn.Module):
    """A batch-statistics-free model whose loss is a per-sample mean (accumulation must equal one big batch)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(6, 1)


def _forward(module, batch):
    return {"loss": torch.nn.functional.mse_loss(module.lin(batch["images"]).squeeze(1), batch["y"])}


def _batch(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(n, 6, generator=g), "y": torch.randn(n, generator=g)}


def _stepper(accum=1, clip=0.0, lr=0.1):
    model = _Regression()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return model, TrainStep(model, opt, scheduler=sched, accum_steps=accum, grad_clip=clip, forward=_forward)


def test_accumulated_micro_batches_equal_one_batch():
    batch = _batch()
    m1, whole = _stepper()
    whole(batch)
    m2, accum = _stepper(accum=2)
    for half in (slice(0, 4), slice(4, 8)):
        accum.micro_batch({k: v[half] for k, v in batch.items()}, last=half.start == 4)
    accum.grad_norm()
    accum.apply()
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p1, p2, atol=1e-6)
    assert all(p.grad is None for p in m2.parameters())
    with pytest.raises(ValueError, match="accum_steps=2"):
        accum(batch)


def test_clipping_reports_the_norm_and_a_discarded_step_changes_nothing():
    model, step = _stepper(clip=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    step.micro_batch(_batch())
    norm = float(step.grad_norm())
    clipped = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    assert norm > 1e-3 and float(clipped) == pytest.approx(1e-3, rel=1e-4)
    lr = step.scheduler.get_last_lr()[0]
    step.discard()  # as the trainer does for a NaN/Inf step: weights and schedule stay
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters()) and step.scheduler.get_last_lr()[0] == lr
    step.micro_batch(_batch())
    step.grad_norm()
    step.apply()
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert step.scheduler.get_last_lr()[0] == pytest.approx(lr / 2)


def _photo(seed=0, size=(80, 60)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_training_transform_is_a_function_of_the_sample_seed_only():
    """Resume exactness: a sample's augmentation depends on its seed, not on what ran before (timm's crop draws
    from ``random``, the flip from torch; SampleBuilder seeds both and restores them)."""
    from icmlm_zoo.training.data.dataset import _seeded
    from icmlm_zoo.transforms import create_image_transform
    tf = create_image_transform({}, training=True, image_size=32, scale_min=0.3, hflip=True)
    image = _photo()
    random.seed(1)
    torch.manual_seed(1)
    a = _seeded(tf, image, 123)
    after = (random.random(), torch.rand(1))
    random.seed(99)
    torch.manual_seed(99)
    b = _seeded(tf, image, 123)
    random.seed(1)
    torch.manual_seed(1)
    c = _seeded(tf, image, 124)
    assert torch.equal(a, b) and a.shape == (3, 32, 32)
    assert not torch.equal(a, c)
    random.seed(1)
    torch.manual_seed(1)
    _seeded(tf, image, 5)
    assert (random.random(), torch.rand(1)) == after  # the callers' generators are left as they were


def test_one_factory_gives_the_weights_preprocessing():
    """Evaluation uses exactly timm's transform for the model's data config; the run's transforms carry the
    backbone's mean/std and the run's size; scale_min >= 1 is a plain resize of the whole image."""
    import timm

    import icmlm_zoo  # noqa: F401
    from icmlm_zoo.evaluation.features import eval_transform
    from icmlm_zoo.training.config_sections import DataSection
    from icmlm_zoo.training.data.transforms import run_preprocessing, run_transforms
    model = timm.create_model("icmlm_resnet_tiny", pretrained=False)
    cfg = timm.data.resolve_model_data_config(model)
    image = _photo(size=(90, 70))
    ours = eval_transform(cfg, 48)(image)
    theirs = timm.data.create_transform(**{**cfg, "input_size": (3, 48, 48)}, is_training=False)(image)
    assert torch.equal(ours, theirs)
    data = DataSection(image_size=40, scale_min=1.0, eval_crop_pct=1.0)
    train, evaluation = run_transforms(run_preprocessing("icmlm_resnet_tiny", data), data)
    square = _photo(size=(64, 64))
    assert torch.equal(train(square), evaluation(square))  # no augmentation: resize only, nothing cropped
    assert train(square).shape == (3, 40, 40)
    mean = torch.tensor(cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(cfg["std"]).view(3, 1, 1)
    grey = Image.new("RGB", (40, 40), (128, 128, 128))
    assert torch.allclose(evaluation(grey), (128 / 255 - mean) / std * torch.ones(3, 40, 40), atol=1e-5)
