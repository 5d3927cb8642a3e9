"""World-model metrics: PSNR, SSIM (against a hand computation), optical-flow EPE, conversions."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from rise.models.metrics import (
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    clip_metrics,
    copy_last_frame_baseline,
    flow_epe,
    frames_to_uint8,
    psnr,
    ssim,
)


def _texture(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random RGB uint8 texture that optical flow can track."""
    noise = np.random.default_rng(seed).uniform(0, 255, (size, size, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 3 - 255, 0, 255).astype(np.uint8)


def test_psnr_known_values():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))  # MSE 1
    assert psnr(a / 255.0, (a + 1) / 255.0) == pytest.approx(20 * math.log10(255))  # floats in [0, 1]
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:4])


def test_ssim_of_identical_frames_is_one_and_falls_with_noise():
    image = _texture()
    assert ssim(image, image) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    scores = [ssim(image, np.clip(image + rng.normal(0, std, image.shape), 0, 255).astype(np.uint8))
              for std in (5, 20, 60)]
    assert 1.0 > scores[0] > scores[1] > scores[2]


def test_ssim_of_constant_frames_is_the_luminance_term():
    a, b = np.full((32, 32), 100, np.uint8), np.full((32, 32), 140, np.uint8)
    c1 = (SSIM_K1 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1))


def test_ssim_matches_a_hand_computed_gaussian_window():
    """On an 11x11 frame the score is the one full window at the centre, computed by hand here."""
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 1, (2, SSIM_WINDOW, SSIM_WINDOW))
    g = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA)
    w = g @ g.T
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy, cov = (w * x * x).sum() - mx**2, (w * y * y).sum() - my**2, (w * x * y).sum() - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    expected = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(x, y, data_range=1.0) == pytest.approx(expected, rel=1e-9)


def test_flow_epe_is_zero_for_matching_motion_and_the_shift_otherwise():
    image = _texture()
    shifted = np.roll(image, 2, axis=1)  # moved 2 px right
    assert flow_epe(image, image, image, image) == pytest.approx(0.0, abs=1e-6)
    assert flow_epe(image, shifted, image, shifted) == pytest.approx(0.0, abs=1e-6)
    still = flow_epe(image, shifted, image, image)  # real moved, imagined did not
    assert 1.0 < still < 3.0
    as_float = flow_epe(image / 255.0, shifted / 255.0, image / 255.0, image / 255.0)  # floats in [0, 1]
    assert as_float == pytest.approx(still, abs=0.05)


def test_conversions_and_copy_last_frame_baseline():
    frames = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(2, 3, 4, 5)  # (B, C, h, w)
    out = frames_to_uint8(frames)
    assert out.shape == (2, 4, 5, 3) and out.dtype == np.uint8
    assert out[0, 0, 0].tolist() == [0, 128, 255]
    context = torch.rand(1, 3, 2, 3, 4, 5, generator=torch.Generator().manual_seed(0))  # (B, V, K, C, h, w)
    copied = copy_last_frame_baseline(context, horizon=4)
    assert copied.shape == (1, 3, 4, 3, 4, 5) and torch.equal(copied[:, :, 3], context[:, :, -1])
    as_numpy = copy_last_frame_baseline(context.numpy(), horizon=4)
    assert isinstance(as_numpy, np.ndarray) and np.array_equal(as_numpy, copied.numpy())


def test_clip_metrics_of_a_perfect_clip():
    clip = np.stack([np.roll(_texture(), k, axis=1) for k in range(1, 4)])
    scores = clip_metrics(clip, clip, _texture())
    assert scores["psnr"] == 100.0 and scores["ssim"] == pytest.approx(1.0)
    assert scores["flow_epe"] == pytest.approx(0.0, abs=1e-6)
    frozen = clip_metrics(np.stack([_texture()] * 3), clip, _texture())  # copy-last-frame
    assert frozen["psnr"] < 40 and frozen["flow_epe"] > 0.5
