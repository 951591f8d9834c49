"""Write grayscale frames as a WebM (VP9) file with PyAV, one frame at a time, whole or not at all.

The original toolkit piped whole arrays to an ffmpeg process; here frames are
encoded as the movie streams by, so a clip never exists in memory. The file is
written to a temporary name beside its destination and renamed into place by
:meth:`WebmWriter.close`; :meth:`WebmWriter.abort` (or an exception inside the
``with`` block) deletes it.
"""
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

CODEC = "libvpx-vp9"


class WebmWriter:
    """A VP9 WebM file being written.

    Parameters
    ----------
    path : Path
        The destination.
    shape : tuple of int
        ``(height, width)`` of the frames.
    fps : float
        Frames per second of playback.
    crf : int
        VP9's constant quality (0-63, lower is better), with no bitrate cap.
    """

    def __init__(self, path: Path, shape: tuple[int, int], fps: float, crf: int):
        import av

        self.path = Path(path)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                                 dir=self.path.parent)
        os.close(descriptor)
        self._temporary = Path(temporary)
        self.frames = 0
        try:
            self._container = av.open(str(self._temporary), mode="w", format="webm")
            self._stream = self._container.add_stream(
                CODEC, rate=Fraction(fps).limit_denominator(10_000))
            self._stream.height, self._stream.width = shape
            self._stream.pix_fmt = "yuv420p"
            # constant quality; the realtime deadline and no look-ahead keep each open
            # encoder small and fast, which matters with hundreds open at once
            self._stream.options = {"crf": str(crf), "b": "0", "deadline": "realtime",
                                    "cpu-used": "8", "lag-in-frames": "0"}
        except BaseException:
            self._temporary.unlink(missing_ok=True)
            raise

    def __enter__(self) -> "WebmWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: np.ndarray) -> None:
        """Encode one uint8 ``(height, width)`` frame."""
        import av

        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, np.uint8),
                                                 format="gray")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder, close the file and rename it into place."""
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            os.chmod(self._temporary, 0o666 & ~_umask())
            os.replace(self._temporary, self.path)
        finally:
            self._temporary.unlink(missing_ok=True)

    def abort(self) -> None:
        """Drop the file."""
        try:
            self._container.close()
        finally:
            self._temporary.unlink(missing_ok=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def decoded_frame_count(path: Path) -> int:
    """How many frames a video file decodes to (for checks and tests)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
