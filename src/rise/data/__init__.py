"""ROS-free recording: LeRobot v3.0 datasets, stream synchronisation and the recorder core.

``DatasetWriter`` / ``DatasetReader`` write and read the dataset folder; ``StreamSynchronizer``
matches camera and joint-state samples by capture stamp; ``Recorder`` turns matched samples into
dataset frames. The ROS recorder node and ``rise collect`` both drive a ``Recorder``.
"""

from rise.data.lerobot_format import DatasetError, DatasetSpec, DatasetSpecMismatch
from rise.data.reader import DatasetReader, Episode
from rise.data.recorder import EmptyEpisodeError, EpisodeReport, Recorder
from rise.data.sync import MatchedSet, StreamSynchronizer, SyncCounters
from rise.data.video import CODECS
from rise.data.writer import DatasetWriteError, DatasetWriter, DiskSpaceError

__all__ = [
    "CODECS",
    "DatasetError",
    "DatasetReader",
    "DatasetSpec",
    "DatasetSpecMismatch",
    "DatasetWriteError",
    "DatasetWriter",
    "DiskSpaceError",
    "EmptyEpisodeError",
    "Episode",
    "EpisodeReport",
    "MatchedSet",
    "Recorder",
    "StreamSynchronizer",
    "SyncCounters",
]
