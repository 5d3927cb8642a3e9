"""World-model evaluation on held-out episodes: is the dynamics model accurate, does it follow the
actions, does the value model track progress and separate successes from failures.

Dynamics: for windows of held-out episodes, the imagined H frames of every view are compared with
the real ones (PSNR, SSIM) and with two baselines — copying the last context frame, and the same
model fed *shuffled* actions (another window's). Action following: the dense optical flow from the
last context frame to each future frame, real vs imagined (end-point error, pixels; PSNR is capped
at 100 dB for identical frames). A model that
extrapolates motion without using the actions scores the same with shuffled actions.

Value: Pearson correlation of V with progress t/T on held-out successes, and the ROC AUC of the
final V separating successes from failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import torch

from rise.models.episodes import EpisodeArrays, NormStats, to_uint8, to_unit_range
from rise.models.flow_matching import sample
from rise.models.metrics import flow_epe, psnr, ssim
from rise.models.value_training import progress_correlation, success_auc


def dynamics_windows(episodes: Sequence[EpisodeArrays], k: int, h: int,
                     per_episode: int) -> list[tuple[int, int]]:
    """(episode, t) starts spread evenly over each episode."""
    starts = []
    for e, episode in enumerate(episodes):
        last = episode.length - h - 1
        if last >= k - 1:
            starts += [(e, int(t)) for t in np.unique(np.linspace(k - 1, last, per_episode).round())]
    return starts


def _frame_scores(real: np.ndarray, imagined: np.ndarray, last: np.ndarray) -> tuple[float, float, float]:
    """Mean PSNR, SSIM and flow EPE over the H frames of one view."""
    p = np.mean([min(psnr(r, g), 100.0) for r, g in zip(real, imagined, strict=True)])  # identical: inf
    s = np.mean([ssim(r, g) for r, g in zip(real, imagined, strict=True)])
    e = np.mean([flow_epe(last, r, last, g) for r, g in zip(real, imagined, strict=True)])
    return float(p), float(s), float(e)


@torch.no_grad()
def evaluate_dynamics(model, stats: NormStats, episodes: Sequence[EpisodeArrays], *, per_episode: int = 4,
                      sampling_steps: int = 10, batch_size: int = 8, seed: int = 0,
                      video: Path | None = None, video_windows: int = 3) -> dict:
    """Metrics of the imagined frames vs the copy-last-frame and shuffled-action baselines."""
    k, h = int(model.config.context_frames), int(model.config.horizon)
    starts = dynamics_windows(episodes, k, h, per_episode)
    if len(starts) < 2:
        raise ValueError("need at least two held-out windows (one to borrow shuffled actions from)")
    rng = np.random.default_rng(seed)
    donors = rng.permutation(len(starts))
    donors = np.where(donors == np.arange(len(starts)), np.roll(donors, 1), donors)
    names = ("imagined", "copy_last", "shuffled_actions")
    scores = {name: [] for name in names}
    by_view = {name: {} for name in names}
    clips = []
    for begin in range(0, len(starts), batch_size):
        chunk = list(range(begin, min(begin + batch_size, len(starts))))
        context = torch.stack([_context(episodes, starts[i], k) for i in chunk])
        real = np.stack([episodes[starts[i][0]].images[starts[i][1] + 1:starts[i][1] + 1 + h] for i in chunk])
        actions = torch.stack([_actions(episodes, starts[i], h, stats) for i in chunk])
        shuffled = torch.stack([_actions(episodes, starts[donors[i]], h, stats) for i in chunk])
        generator = torch.Generator().manual_seed(seed + begin)
        imagined = to_uint8(sample(model, context, actions, steps=sampling_steps, generator=generator))
        generator = torch.Generator().manual_seed(seed + begin)
        swapped = to_uint8(sample(model, context, shuffled, steps=sampling_steps, generator=generator))
        last = to_uint8(context[:, :, -1])  # (B, V, h, w, 3)
        for j in range(len(chunk)):
            for v in range(real.shape[2]):
                truth = real[j, :, v]
                copy = np.repeat(last[j, v][None], h, axis=0)
                for name, frames in (("imagined", imagined[j, v]), ("shuffled_actions", swapped[j, v]),
                                     ("copy_last", copy)):
                    score = _frame_scores(truth, frames, last[j, v])
                    scores[name].append(score)
                    by_view[name].setdefault(v, []).append(score)
            if len(clips) < video_windows:
                clips.append((real[j], imagined[j].transpose(1, 0, 2, 3, 4),
                              swapped[j].transpose(1, 0, 2, 3, 4)))
    if video is not None:
        write_side_by_side(video, clips)
    summary = {name: _mean_scores(values) for name, values in scores.items()}
    summary["per_view"] = {name: {v: _mean_scores(values) for v, values in views.items()}
                           for name, views in by_view.items()}
    summary["windows"] = len(starts)
    summary["sampling_steps"] = sampling_steps
    return summary


def _mean_scores(values) -> dict:
    return dict(zip(("psnr", "ssim", "flow_epe"), np.mean(values, axis=0).round(4).tolist(), strict=True))


def _context(episodes, start, k) -> torch.Tensor:
    e, t = start
    return to_unit_range(episodes[e].images[t - k + 1:t + 1]).transpose(0, 1)


def _actions(episodes, start, h, stats: NormStats) -> torch.Tensor:
    e, t = start
    return torch.from_numpy(np.asarray(stats.normalize(episodes[e].actions[t:t + h]), np.float32))


def write_side_by_side(path: Path, clips, scale: int = 3, fps: int = 8) -> None:
    """An mp4 of clips side by side: each clip is a tuple of (T, V, h, w, 3) arrays shown as columns
    (e.g. real | imagined | shuffled actions), one row per view."""
    frames = []
    for columns in clips:
        for step in range(columns[0].shape[0]):
            rows = [np.concatenate([column[step, v] for column in columns], axis=1)
                    for v in range(columns[0].shape[1])]
            frames.append(np.concatenate(rows, axis=0))
    if not frames:
        return
    height, width = frames[0].shape[:2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width * scale, height * scale
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            big = np.kron(frame, np.ones((scale, scale, 1), np.uint8))
            for packet in stream.encode(av.VideoFrame.from_ndarray(big, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@torch.no_grad()
def episode_values(model, episode: EpisodeArrays, instruction: str | None = None, batch_size: int = 64
                   ) -> np.ndarray:
    """V of every frame of an episode."""
    values = []
    for begin in range(0, episode.length, batch_size):
        frames = to_unit_range(episode.images[begin:begin + batch_size])  # (B, V, 3, h, w)
        texts = None if instruction is None else [instruction] * len(frames)
        values.append(model(frames, texts).float().numpy())
    return np.concatenate(values)


def evaluate_value(model, episodes: Sequence[EpisodeArrays], plot: Path | None = None) -> dict:
    """Correlation with progress on successes, success/failure AUC of the final V."""
    model.eval()
    instruction = (lambda e: e.task) if getattr(model.config, "use_instruction", False) else (lambda e: None)
    traces = [(episode, episode_values(model, episode, instruction(episode))) for episode in episodes]
    successes = [(e, v) for e, v in traces if e.success]
    correlation = float("nan")
    if successes:
        progress = np.concatenate([np.linspace(0, 1, e.length) for e, _ in successes])
        correlation = progress_correlation(np.concatenate([v for _, v in successes]), progress)
    labels = [e.success for e, _ in traces]
    auc = success_auc([v[-1] for _, v in traces], labels) if 0 < sum(labels) < len(labels) else float("nan")
    if plot is not None:
        plot_values(plot, traces)
    return {"progress_correlation": round(correlation, 4), "success_auc": round(auc, 4),
            "episodes": len(traces), "successes": int(sum(labels))}


def plot_values(path: Path, traces) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for episode, values in traces:
        axis.plot(np.linspace(0, 1, len(values)), values, color="tab:green" if episode.success else "tab:red",
                  alpha=0.6, linewidth=1)
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="progress t/T")
    axis.set_xlabel("episode progress t/T")
    axis.set_ylabel("V")
    axis.set_title("value on held-out episodes (green: success, red: failure)")
    axis.legend(loc="lower right")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
