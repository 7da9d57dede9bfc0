import io

import pytest
import torch

from detzoo.engine.schedule import Schedule, WarmupMultiStepLR, resolve_schedule, scale_lr


@pytest.mark.parametrize(
    "name, max_iters, steps",
    [
        ("1x", 12 * 7330, (8 * 7330, 11 * 7330)),
        ("2x", 24 * 7330, (16 * 7330, 22 * 7330)),
        ("20_23_24e", 24 * 7330, (20 * 7330, 23 * 7330)),
        ("50e", 50 * 7330, (30 * 7330, 40 * 7330)),
        ("s1x", 130_000, (100_000, 120_000)),
    ],
)
def test_named_schedules(name, max_iters, steps):
    assert resolve_schedule(name, iters_per_epoch=7330, batch_size=16) == Schedule(max_iters, steps)


def test_s1x_scales_with_batch_size():
    assert resolve_schedule("s1x", iters_per_epoch=1, batch_size=8) == Schedule(260_000, (200_000, 240_000))
    assert resolve_schedule("s1x", iters_per_epoch=1, batch_size=32) == Schedule(65_000, (50_000, 60_000))


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"epochs": 3, "steps": (2,)}, Schedule(30, (20,))),
        ({"iters": 40, "steps": [30, 35]}, Schedule(40, (30, 35))),
        ({"iters": 100, "steps": (50,), "batch_size": 4}, Schedule(200, (100,))),  # iters at batch 4
    ],
)
def test_explicit_specs(spec, expected):
    assert resolve_schedule(spec, iters_per_epoch=10, batch_size=2) == expected


def test_schedule_errors():
    with pytest.raises(ValueError, match="unknown schedule '4x'; valid names: 1x, 2x, 3x, 20_23_24e, 50e, s1x"):
        resolve_schedule("4x", iters_per_epoch=10, batch_size=2)
    with pytest.raises(ValueError, match=r"unknown keys \['epoch'\]"):
        resolve_schedule({"epoch": 3, "steps": (2,)}, iters_per_epoch=10, batch_size=2)
    with pytest.raises(ValueError, match="exactly one of 'epochs' or 'iters'"):
        resolve_schedule({"epochs": 3, "iters": 3, "steps": (2,)}, iters_per_epoch=10, batch_size=2)
    with pytest.raises(ValueError, match=r"steps must be increasing and inside \(0, max_iters=30\)"):
        resolve_schedule({"epochs": 3, "steps": (2, 3)}, iters_per_epoch=10, batch_size=2)


def test_scale_lr():
    assert scale_lr(0.02, base_batch_size=16, batch_size=2) == pytest.approx(0.0025)
    assert scale_lr(0.08, base_batch_size=64, batch_size=64) == pytest.approx(0.08)
    with pytest.raises(ValueError, match="must be positive"):
        scale_lr(0.02, base_batch_size=16, batch_size=0)


def make_scheduler(**kwargs):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.02)
    return optimizer, WarmupMultiStepLR(optimizer, steps=(600, 800), **kwargs)


def run_to(optimizer, scheduler, iteration):
    while scheduler.last_epoch < iteration:
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize(
    "iteration, factor",
    [(0, 0.001), (250, 0.001 * 0.5 + 0.5), (499, 0.001 * 0.002 + 0.998), (500, 1.0),
     (599, 1.0), (600, 0.1), (799, 0.1), (800, 0.01), (1000, 0.01)],
)
def test_warmup_multistep_lr(iteration, factor):
    optimizer, scheduler = make_scheduler()
    assert run_to(optimizer, scheduler, iteration) == pytest.approx(0.02 * factor)


def test_steps_during_warmup_and_custom_warmup():
    optimizer, scheduler = make_scheduler(warmup_iters=1000, warmup_factor=0.1, gamma=0.5)
    assert run_to(optimizer, scheduler, 700) == pytest.approx(0.02 * (0.1 * 0.3 + 0.7) * 0.5)


def test_state_dict_round_trip():
    optimizer, scheduler = make_scheduler()
    run_to(optimizer, scheduler, 650)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed_optimizer, resumed = make_scheduler()
    resumed_optimizer.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["scheduler"])
    assert resumed.last_epoch == 650 and resumed_optimizer.param_groups[0]["lr"] == pytest.approx(0.002)
    assert run_to(resumed_optimizer, resumed, 850) == pytest.approx(run_to(optimizer, scheduler, 850))
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(0.0002)


def test_norm_parameters_can_skip_weight_decay():
    """The crop640 recipe (norm_weight_decay=0): BN / GN weights and biases in a group of
    their own without decay, every other trainable parameter with the weight decay."""
    from torch import nn

    from detzoo.engine.trainer import param_groups

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1), nn.GroupNorm(2, 8))
    model[0].weight.requires_grad_(False)
    (plain,) = param_groups(model, 1e-4, None)
    assert plain["weight_decay"] == 1e-4 and len(plain["params"]) == 7
    others, norms = param_groups(model, 1e-4, 0.0)
    assert others["weight_decay"] == 1e-4 and norms["weight_decay"] == 0.0
    assert {id(p) for p in norms["params"]} == {id(p) for m in (model[1], model[3]) for p in m.parameters()}
    assert {id(p) for p in others["params"]} == {id(model[0].bias), id(model[2].weight), id(model[2].bias)}
