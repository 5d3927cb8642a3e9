"""The dynamics model and its flow-matching loss and sampler, on tiny configs (16x16 px, CPU, seconds).

One module-scoped fixture overfits a toy clip pair, a bright square that moves right or left by
the action from the same start frames, so both overfitting and action-following are checked on it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from rise.models.dynamics import NAMED_CONFIGS, DynamicsModel, named_config
from rise.models.flow_matching import FlowMatchingConfig, LossSpace, interpolate, sample, training_step
from rise.models.metrics import copy_last_frame_baseline, frames_to_uint8, psnr

SIZE, K, H, A = 16, 2, 3, 3
TINY = dict(image_size=(SIZE, SIZE), patch_size=4, num_views=2, context_frames=K, horizon=H, action_dim=A,
            width=32, depth=2, heads=2)
OVERFIT_STEPS = 300
LOSS_FALL = 5.0  # measured 16-38x over seeds 0-7


def _randomised(**overrides) -> DynamicsModel:
    """A tiny model whose zero-initialised layers (adaLN, output) are random, so every path is live."""
    torch.manual_seed(0)
    model = DynamicsModel(**{**TINY, **overrides})
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.1, generator=generator)
    return model


def _inputs(b: int = 2, seed: int = 0, views: int = 2):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(b, views, H, 3, SIZE, SIZE, generator=g)
    context = torch.rand(b, views, K, 3, SIZE, SIZE, generator=g) * 2 - 1
    return x_t, context, torch.randn(b, H, A, generator=g), torch.rand(b, generator=g)


def _square(x: int) -> torch.Tensor:
    frame = -torch.ones(3, SIZE, SIZE)
    frame[:, 6:10, x:x + 4] = 1.0
    return frame


def _toy_batch() -> dict[str, torch.Tensor]:
    """Two clips from the same start: the square moves 2 px per step right (+1) or left (-1).

    View 0 sees it as is, view 1 upside down. Only the actions tell the clips apart.
    """
    clips = []
    for dx in (1, -1):
        frames = torch.stack([_square(6)] * K + [_square(6 + 2 * dx * (k + 1)) for k in range(H)])
        clips.append((torch.stack([frames, frames.flip(-2)]), torch.tensor([[dx, 0.0, 0.0]] * H)))
    video = torch.stack([c[0] for c in clips])
    actions = torch.stack([c[1] for c in clips])
    return {"context": video[:, :, :K], "future": video[:, :, K:], "actions": actions}


@pytest.fixture(scope="module")
def overfit():
    """(model, batch, losses) after OVERFIT_STEPS steps on the toy batch (~6 s on one core)."""
    torch.manual_seed(0)
    model = DynamicsModel(**{**TINY, "width": 64})
    batch = _toy_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(OVERFIT_STEPS):
        loss = training_step(model, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), batch, losses


def _centroid_x(frames: torch.Tensor) -> torch.Tensor:
    """Brightness-weighted column centroid of (B, C, h, w) frames in [-1, 1] (background -1 weighs 0)."""
    weight = ((frames[:, 0] + 1) / 2).clamp(min=0)
    return (weight.sum(1) * torch.arange(SIZE)).sum(-1) / weight.sum((1, 2)).clamp(min=1e-6)


def _mean_psnr(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Mean per-frame PSNR of (..., C, h, w) frames in [-1, 1]."""
    real, fake = (frames_to_uint8(x).reshape(-1, SIZE, SIZE, 3) for x in (real, fake))
    pairs = zip(real, fake, strict=True)
    return float(np.mean([psnr(r, f) for r, f in pairs]))


def test_output_shape_and_config_checks():
    model = DynamicsModel(**TINY)
    x_t, context, actions, t = _inputs()
    assert model(x_t, context, actions, t).shape == x_t.shape
    with pytest.raises(ValueError, match="context must be"):
        model(x_t, context[:, :, :1], actions, t)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        DynamicsModel(**{**TINY, "patch_size": 5})
    with pytest.raises(ValueError, match="did you mean 'cpu_default'"):
        named_config("cpu_defualt")


@pytest.mark.parametrize("prediction_type", ["sample", "velocity"])
def test_tubelets_and_prediction_types_keep_shapes(prediction_type):
    model = _randomised(horizon=4, temporal_patch=2, prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 2, 4, 3, SIZE, SIZE, generator=g)
    out = model(x_t, torch.zeros(2, 2, K, 3, SIZE, SIZE), torch.randn(2, 4, A, generator=g), torch.rand(2))
    assert out.shape == x_t.shape and torch.isfinite(out).all()


def test_view_embedding_tells_views_apart():
    model = _randomised()
    x_t, context, actions, t = _inputs()
    same_x, same_ctx = x_t[:, :1].expand_as(x_t), context[:, :1].expand_as(context)
    with torch.no_grad():
        out = model(same_x, same_ctx, actions, t)
        assert (out[:, 0] - out[:, 1]).abs().mean() > 1e-3
        model.view_embed.zero_()
        out = model(same_x, same_ctx, actions, t)
    torch.testing.assert_close(out[:, 0], out[:, 1])


def test_cross_view_attention_couples_the_views():
    model = _randomised()
    x_t, context, actions, t = _inputs()
    other = context.clone()
    other[:, 1] = -other[:, 1]
    with torch.no_grad():
        change = (model(x_t, context, actions, t)[:, 0] - model(x_t, other, actions, t)[:, 0]).abs().mean()
    assert change > 1e-4  # view 0's prediction sees view 1's context


def test_save_and_load_round_trip_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _randomised()
    model.save_pretrained(tmp_path)
    loaded = DynamicsModel.from_pretrained_or_config(tmp_path)
    public = {k: v for k, v in model.config.items() if not k.startswith("_")}
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == public
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(model(*inputs), loaded(*inputs))


def test_pretrained_init_with_a_changed_config_keeps_the_shared_weights(tmp_path):
    model = _randomised()
    model.save_pretrained(tmp_path)
    wider = DynamicsModel.from_pretrained_or_config(tmp_path, num_views=3)
    assert wider.view_embed.shape[0] == 3
    assert torch.equal(wider.blocks[0].mlp[0].weight, model.blocks[0].mlp[0].weight)
    with pytest.raises(FileNotFoundError):
        DynamicsModel.from_pretrained_or_config(tmp_path / "missing")
    assert DynamicsModel.from_pretrained_or_config(None, **TINY).config.width == TINY["width"]


def test_named_configs():
    cpu = DynamicsModel.from_named_config("cpu_default")
    assert 1.5e6 < sum(p.numel() for p in cpu.parameters()) < 4e6
    paper = named_config("paper")
    assert (paper["image_size"], paper["num_views"], paper["context_frames"], paper["horizon"]) == (
        (192, 256), 3, 4, 25)
    with torch.device("meta"):
        big = DynamicsModel.from_named_config("paper")
    assert 1e8 < sum(p.numel() for p in big.parameters()) < 5e8
    assert {"cpu_default", "paper"} <= set(NAMED_CONFIGS)


def test_interpolation_convention():
    x0, noise = torch.zeros(2, 4), torch.ones(2, 4)
    x_t, v = interpolate(x0, noise, torch.tensor([0.0, 1.0]))
    assert torch.equal(x_t[0], x0[0]) and torch.equal(x_t[1], noise[1]) and torch.equal(v, noise - x0)


def test_training_step_is_reproducible_and_checks_the_batch():
    model = _randomised()
    batch = _toy_batch()
    losses = [training_step(model, batch, torch.Generator().manual_seed(3)).item() for _ in range(2)]
    assert losses[0] == losses[1] and np.isfinite(losses[0])
    velocity = FlowMatchingConfig(loss_space=LossSpace.VELOCITY)
    assert np.isfinite(training_step(model, batch, torch.Generator().manual_seed(3), velocity).item())
    with pytest.raises(KeyError, match="actions"):
        training_step(model, {"context": batch["context"], "future": batch["future"]})


def test_sampling_is_deterministic_and_in_range():
    model = _randomised()
    _, context, actions, _ = _inputs()
    first = sample(model, context, actions, steps=4, generator=torch.Generator().manual_seed(7))
    again = sample(model, context, actions, steps=4, generator=torch.Generator().manual_seed(7))
    other = sample(model, context, actions, steps=4, generator=torch.Generator().manual_seed(8))
    assert first.shape == (2, 2, H, 3, SIZE, SIZE)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= -1 and first.max() <= 1


def test_the_model_overfits_a_tiny_clip(overfit):
    _, _, losses = overfit
    assert np.mean(losses[:10]) > LOSS_FALL * np.mean(losses[-20:])


@pytest.mark.parametrize("use_scheduler", [False, True])
def test_overfit_samples_beat_copy_last_frame(overfit, use_scheduler):
    model, batch, _ = overfit
    scheduler = FlowMatchEulerDiscreteScheduler() if use_scheduler else None
    imagined = sample(model, batch["context"], batch["actions"], steps=10,
                      generator=torch.Generator().manual_seed(1), scheduler=scheduler)
    score = _mean_psnr(batch["future"], imagined)
    baseline = _mean_psnr(batch["future"], copy_last_frame_baseline(batch["context"], H))
    assert score > baseline + 3.0  # dB; measured 26 vs 10 (seed 0), >= 8 dB apart over seeds 0-7


def test_the_actions_steer_the_imagined_frames(overfit):
    """Same start frames and noise, swapped actions: the square goes where the actions say."""
    model, batch, _ = overfit
    generator = torch.Generator().manual_seed(1)
    imagined = sample(model, batch["context"], batch["actions"], steps=10, generator=generator)
    swapped = sample(model, batch["context"], batch["actions"].flip(0), steps=10,
                     generator=torch.Generator().manual_seed(1))
    right, left = _centroid_x(imagined[:, 0, -1])  # truth: 13.5 and 1.5 px; seeds 0-7: >= 8.7 apart
    assert right > left + 4.0
    assert (imagined - swapped.flip(0)).abs().mean() < (imagined - swapped).abs().mean()
