"""Dataset videos through PyAV: the codec table, the streaming mp4 encoder and the checked decoder.

:data:`CODECS` maps the ``codec`` argument of :class:`rise.data.DatasetWriter` to a
:class:`VideoCodec` (encoder, quality option and the codec name LeRobot records in ``info.json``).
:class:`VideoEncoder` writes one camera's mp4 of one episode, a frame at a time with
pts = frame index. :func:`decode_video` reads frames back, checking each presentation time
(OpenCV silently reads no frames of AV1, hence PyAV on both sides).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rise.data.lerobot_format import DatasetError, fsync_file

_LOG = logging.getLogger(__name__)
_GOP_SIZE = 2  # LeRobot's default keyframe interval: cheap random access when training


@dataclasses.dataclass(frozen=True)
class VideoCodec:
    """An encoder PyAV can open, its quality option, and the codec name LeRobot records."""

    encoder: str  # PyAV/FFmpeg encoder name
    name: str  # codec name as probed from the stream ("av1", "h264", "mpeg4")
    quality_option: str  # encoder option the ``crf`` argument sets (lower = better, bigger)
    default_quality: int  # its value when the caller gives none
    max_quality: int  # largest accepted value (0 or 1 is the smallest)
    options: tuple[tuple[str, str], ...]  # fixed encoder options (speed preset)


CODECS: dict[str, VideoCodec] = {
    "libsvtav1": VideoCodec("libsvtav1", "av1", "crf", 30, 63, (("preset", "11"),)),
    "h264": VideoCodec("libx264", "h264", "crf", 23, 51, (("preset", "veryfast"),)),
    "libx264": VideoCodec("libx264", "h264", "crf", 23, 51, (("preset", "veryfast"),)),
    "mpeg4": VideoCodec("mpeg4", "mpeg4", "qscale", 3, 31, ()),
}


def video_codec(name: str) -> VideoCodec:
    """The :class:`VideoCodec` for ``name``; ValueError listing the choices otherwise."""
    if name not in CODECS:
        raise ValueError(f"codec: expected one of {sorted(CODECS)}, got {name!r}")
    return CODECS[name]


def fps_fraction(fps: float) -> Fraction:
    """``fps`` as an exact fraction (29.97 -> 2997/100), for stream rates and time bases."""
    return Fraction(fps).limit_denominator(1001)


class VideoEncoder:
    """One camera's mp4 of one episode, frames streamed in with pts = frame index."""

    def __init__(self, path: Path, height: int, width: int, fps: float, codec: VideoCodec,
                 quality: int):
        self.path = path
        if codec.encoder == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # errors only: SVT-AV1 prints a banner per encoder
        rate = fps_fraction(fps)
        self._time_base = 1 / rate
        self._container = av.open(str(path), mode="w", format="mp4")
        try:
            stream = self._container.add_stream(codec.encoder, rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = self._time_base
            stream.options = {**dict(codec.options), "g": str(_GOP_SIZE),
                              codec.quality_option: str(quality)}
        except Exception:
            self._container.close()
            raise
        self._stream = stream

    def encode(self, image: np.ndarray, frame_index: int) -> None:
        """Encode one RGB uint8 (H, W, 3) frame."""
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = frame_index
        frame.time_base = self._time_base
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder, finish the mp4 and fsync it."""
        self._container.mux(self._stream.encode(None))
        self._container.close()
        fsync_file(self.path)

    def abort(self) -> None:
        """Close without caring whether the file is valid (it is about to be removed)."""
        try:
            self._stream.encode(None)  # end of stream: some encoders complain when closed without it
        except Exception as exc:  # noqa: BLE001 - the file is discarded; the cause is logged
            _LOG.debug("flushing abandoned video %s: %s", self.path, exc)
        try:
            self._container.close()
        except Exception as exc:  # noqa: BLE001 - as above
            _LOG.debug("closing abandoned video %s: %s", self.path, exc)


def decode_video(path: Path, *, from_s: float, length: int, fps: float) -> Iterator[np.ndarray]:
    """Yield ``length`` RGB uint8 frames of ``path`` starting at ``from_s``, checking their times.

    Raises :class:`DatasetError` if a frame's time is off by more than a quarter frame or the
    video ends early.
    """
    tolerance_s = 0.25 / fps
    produced = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                time_s = float(frame.pts * stream.time_base)
                if time_s < from_s - tolerance_s:
                    continue
                expected_s = from_s + produced / fps
                if abs(time_s - expected_s) > tolerance_s:
                    raise DatasetError(f"{path}: frame {produced} is at {time_s:.4f} s, expected "
                                       f"{expected_s:.4f} s (missing or duplicated frame)")
                yield frame.to_ndarray(format="rgb24")
                produced += 1
                if produced == length:
                    return
    except av.FFmpegError as exc:
        raise DatasetError(f"{path}: cannot decode: {exc}") from exc
    raise DatasetError(f"{path}: has {produced} frames from {from_s:.4f} s, the episode has {length}")
