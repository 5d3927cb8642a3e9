"""World-model frame metrics: PSNR, SSIM and the optical-flow action-following error (numpy + OpenCV).

Frames are HxWx3 (or HxW) arrays: uint8 in [0, 255], or floats in [0, ``data_range``]
(``data_range`` defaults to 1 for floats). Model outputs in [-1, 1], channels first, are converted
with :func:`frames_to_uint8` first.

Example::

    real = frames_to_uint8(batch["future"])       # (B, V, H, h, w, 3) uint8
    fake = frames_to_uint8(sample(model, ...))
    psnr(real[0, 0, 0], fake[0, 0, 0]), ssim(real[0, 0, 0], fake[0, 0, 0])
    clip_metrics(fake[0, 0], real[0, 0], frames_to_uint8(context)[0, 0, -1])
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_WINDOW = 11
"""Gaussian window side in pixels (Wang et al. 2004)."""
SSIM_SIGMA = 1.5
"""Gaussian window std in pixels."""


def _data_range(a: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    return 255.0 if a.dtype == np.uint8 else 1.0


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    return a, b


def psnr(a: Any, b: Any, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape frames; ``inf`` for identical frames."""
    a, b = _pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(_data_range(a, data_range) ** 2 / mse)


def ssim(a: Any, b: Any, data_range: float | None = None) -> float:
    """Structural similarity with an 11x11 Gaussian window (sigma 1.5) and K1 = 0.01, K2 = 0.03.

    Colour frames are scored per channel and averaged. As in Wang et al. and scikit-image
    (``gaussian_weights=True, use_sample_covariance=False``) the mean leaves out the 5-pixel border
    that the window does not fully cover (when the frame is large enough to keep something).
    """
    a, b = _pair(a, b)
    c1 = (SSIM_K1 * _data_range(a, data_range)) ** 2
    c2 = (SSIM_K2 * _data_range(a, data_range)) ** 2
    x, y = a.astype(np.float64), b.astype(np.float64)

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = SSIM_WINDOW // 2
    if min(ssim_map.shape[:2]) > 2 * pad:
        ssim_map = ssim_map[pad:-pad, pad:-pad]
    return float(ssim_map.mean())


def _gray_uint8(frame: Any) -> np.ndarray:
    """HxWx3 RGB or HxW frame (uint8, or float in [0, 1]) -> HxW uint8 grey."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(np.rint(frame.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if frame.ndim == 3:
        frame = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    return frame


def optical_flow(prev: Any, nxt: Any) -> np.ndarray:
    """Dense Farneback optical flow (HxWx2, pixels) from ``prev`` to ``nxt``."""
    return cv2.calcOpticalFlowFarneback(
        _gray_uint8(prev), _gray_uint8(nxt), None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
        poly_n=5, poly_sigma=1.2, flags=0,
    )


def flow_epe(real_prev: Any, real_next: Any, gen_prev: Any, gen_next: Any) -> float:
    """Mean end-point error (pixels) between the optical flow of the real and the generated pair.

    The action-following error: if the imagined frames move the way the real ones did after the
    same actions, their flows agree and the error is near 0.
    """
    real = optical_flow(real_prev, real_next)
    gen = optical_flow(gen_prev, gen_next)
    return float(np.mean(np.linalg.norm(real - gen, axis=-1)))


def frames_to_uint8(frames: Any) -> np.ndarray:
    """Frames (..., C, h, w) in [-1, 1] (torch or numpy) -> (..., h, w, C) uint8 for the metrics."""
    if hasattr(frames, "detach"):
        frames = frames.detach().float().cpu().numpy()
    frames = np.asarray(frames, dtype=np.float64)
    out = np.clip(np.rint((frames + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.moveaxis(out, -3, -1)


def copy_last_frame_baseline(context: Any, horizon: int) -> Any:
    """The "nothing moves" prediction: the last context frame repeated ``horizon`` times.

    ``context`` is (..., K, C, h, w) (torch or numpy); the result is (..., horizon, C, h, w).
    """
    last = context[..., -1:, :, :, :]
    if hasattr(last, "expand"):
        return last.expand(*last.shape[:-4], horizon, *last.shape[-3:]).clone()
    return np.repeat(last, horizon, axis=-4)


def clip_metrics(generated: Any, real: Any, last_context: Any) -> dict[str, float]:
    """Mean PSNR, SSIM and flow EPE over the H frames of one view.

    Args:
        generated: (H, h, w, 3) imagined frames (uint8, or floats in [0, 1]).
        real: (H, h, w, 3) the real frames after the same actions.
        last_context: (h, w, 3) the last frame both started from; the flow of step k is taken
            between frame k-1 and frame k, with frame -1 = ``last_context``.
    """
    generated, real = _pair(generated, real)
    prev_real = [last_context, *real[:-1]]
    prev_gen = [last_context, *generated[:-1]]
    return {
        "psnr": float(np.mean([min(psnr(g, r), 100.0) for g, r in zip(generated, real, strict=True)])),
        "ssim": float(np.mean([ssim(g, r) for g, r in zip(generated, real, strict=True)])),
        "flow_epe": float(np.mean([
            flow_epe(pr, r, pg, g) for pr, r, pg, g in zip(prev_real, real, prev_gen, generated, strict=True)
        ])),
    }
