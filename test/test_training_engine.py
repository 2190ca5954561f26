"""Unit tests of the training-loop pieces: sparseinst_core.training.engine and .optimizer."""
from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from torch import nn

from sparseinst_core import build_model
from sparseinst_core.training.criterion import SparseInstCriterion
from sparseinst_core.training.engine import (
    NonFiniteLossError, PadWithPixelMean, SeededItems, TrainBatchSampler, capture_rng_state, restore_rng_state,
    train_one_step,
)
from sparseinst_core.training.optimizer import build_optimizer, build_scheduler, default_schedule, lr_multiplier


def tiny_model():
    torch.manual_seed(0)
    return build_model("r18_giam", num_classes=3, num_masks=8)


def tiny_batch():
    images = torch.rand(2, 3, 64, 64) * 255
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 8:30, 10:40] = True
    masks[1, 35:60, 30:50] = True
    targets = [{"labels": torch.tensor([0, 2]), "masks": masks}, {"labels": torch.zeros(0, dtype=torch.int64),
                                                                  "masks": torch.zeros(0, 64, 64, dtype=torch.bool)}]
    return images, targets


def test_official_schedule_and_warmup():
    assert default_schedule(270_000) == (1000, (210_000, 250_000))
    warmup, steps = default_schedule(1000)
    assert warmup == 50 and steps == (778, 926)
    assert lr_multiplier(0, 100, (500,)) == pytest.approx(0.001)
    assert lr_multiplier(50, 100, (500,)) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_multiplier(100, 100, (500,)) == 1.0
    assert lr_multiplier(500, 100, (500, 700)) == pytest.approx(0.1)
    assert lr_multiplier(700, 100, (500, 700)) == pytest.approx(0.01)

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = build_scheduler(optimizer, max_iters=10, warmup_iters=2, steps=(5,))
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.002, 1.001, 2.0, 2.0, 2.0, 0.2, 0.2])


def test_optimizer_is_adamw_without_decay_on_norm_parameters():
    model = tiny_model()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05, backbone_multiplier=0.5)
    assert isinstance(optimizer, torch.optim.AdamW)
    seen = [id(p) for group in optimizer.param_groups for p in group["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable)   # every parameter exactly once
    settings = {id(p): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}
    assert settings[id(model.backbone.bn1.weight)] == (5e-4, 0.0)
    assert settings[id(model.backbone.conv1.weight)] == (5e-4, 0.05)
    assert settings[id(model.decoder.inst_branch.cls_score.weight)] == (1e-3, 0.05)


def test_batch_order_is_a_function_of_seed_and_iteration():
    def batches(start, count, batch_size=3, rank=0, world_size=1, seed=7):
        sampler = iter(TrainBatchSampler(10, batch_size, seed, start, rank=rank, world_size=world_size))
        return [next(sampler) for _ in range(count)]

    full = batches(0, 9)
    assert batches(4, 5) == full[4:]                        # resuming at 4 continues the same order
    assert len(full[0]) == 3 and TrainBatchSampler(10, 3, 7).iters_per_epoch == 3
    epoch0 = [i for batch in full[:3] for i, _ in batch]
    epoch1 = [i for batch in full[3:6] for i, _ in batch]
    assert len(set(epoch0)) == 9 and epoch0 != epoch1       # a permutation per epoch, reshuffled
    assert batches(0, 3, seed=8) != full[:3]
    # 2 ranks x 2 images see the same items, with the same augmentation seeds, as 1 rank x 4 images.
    single = batches(0, 4, batch_size=4)
    for step in range(4):
        both = batches(0, 4, batch_size=2, rank=0, world_size=2)[step] + batches(0, 4, batch_size=2, rank=1,
                                                                                   world_size=2)[step]
        assert sorted(both) == sorted(single[step])
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TrainBatchSampler(3, 2, 0, rank=0, world_size=2)


class RandomItems(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.rand(2), random.random(), np.random.rand()


def test_seeded_items_are_reproducible_and_leave_global_rng_alone():
    items = SeededItems(RandomItems())
    torch.manual_seed(1)
    before = torch.get_rng_state()
    a, b = items[(2, 123)], items[(2, 123)]
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    assert not torch.equal(items[(2, 124)][0], a[0])
    assert torch.equal(torch.get_rng_state(), before)


def test_padding_uses_the_pixel_mean():
    mean = (10.0, 20.0, 30.0)
    batch = [(torch.full((3, 40, 50), 255.0), {"labels": torch.zeros(1, dtype=torch.int64),
                                              "masks": torch.ones(1, 40, 50, dtype=torch.bool)}),
             (torch.full((3, 64, 30), 255.0), {"labels": torch.zeros(0, dtype=torch.int64),
                                              "masks": torch.zeros(0, 64, 30, dtype=torch.bool)})]
    images, targets = PadWithPixelMean(mean)(batch)
    assert images.shape == (2, 3, 64, 64)
    assert (images[0, :, :40, :50] == 255).all() and (images[1, :, :, :30] == 255).all()
    for channel, value in enumerate(mean):
        assert (images[0, channel, 40:, :] == value).all() and (images[0, channel, :, 50:] == value).all()
        assert (images[1, channel, :, 30:] == value).all()
    assert targets[0]["masks"].shape == (1, 64, 64) and targets[0]["size"] == (40, 50)


def test_rng_state_survives_a_weights_only_round_trip():
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    buffer = io.BytesIO()
    torch.save({"rng": capture_rng_state()}, buffer)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True)["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


def test_train_step_updates_and_clips():
    model, criterion = tiny_model(), SparseInstCriterion()
    optimizer = build_optimizer(model, lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    before = model.decoder.inst_branch.cls_score.weight.detach().clone()
    images, targets = tiny_batch()
    step = train_one_step(model, criterion, optimizer, scaler, images, targets, iteration=1, clip_grad=0.5)
    assert set(step.losses) == {"loss_ce", "loss_mask", "loss_dice", "loss_objectness"}
    assert step.total == pytest.approx(sum(criterion.weight_dict[k] * v for k, v in step.losses.items()), rel=1e-5)
    assert step.grad_norm is not None and step.grad_norm > 0
    total_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert total_norm.item() <= 0.5 + 1e-4   # gradients were clipped before the step
    assert not torch.equal(model.decoder.inst_branch.cls_score.weight, before)


def test_bf16_autocast_step_on_cpu():
    model, criterion = tiny_model(), SparseInstCriterion()
    optimizer = build_optimizer(model, lr=1e-3)
    images, targets = tiny_batch()
    step = train_one_step(model, criterion, optimizer, torch.amp.GradScaler("cpu", enabled=False), images, targets,
                          iteration=1, amp="bf16")
    assert all(np.isfinite(v) for v in step.losses.values())
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train_one_step(model, criterion, optimizer, torch.amp.GradScaler("cpu", enabled=False), images, targets,
                       iteration=2, amp="fp16")


class NaNDice(SparseInstCriterion):
    def forward(self, outputs, targets):
        losses = super().forward(outputs, targets)
        losses["loss_dice"] = losses["loss_dice"] * float("nan")
        return losses


def test_non_finite_loss_raises_before_touching_the_weights():
    model = tiny_model()
    optimizer = build_optimizer(model, lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, targets = tiny_batch()
    with pytest.raises(NonFiniteLossError, match=r"iteration 17 .*loss_ce=[0-9.]+.*loss_dice=nan"):
        train_one_step(model, NaNDice(), optimizer, torch.amp.GradScaler("cpu", enabled=False), images, targets,
                       iteration=17)
    for name, value in model.state_dict().items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):   # the forward ran
            assert torch.equal(value, before[name]), name
    assert not optimizer.state   # no step was taken
