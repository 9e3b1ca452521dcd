"""libjpeg warnings as errors. A JPEG cut mid-stream (even one that still ends with the FF D9 marker) decodes
"successfully" in OpenCV and Pillow: libjpeg fills the missing part with grey and only prints a warning such as
"Corrupt JPEG data: premature end of data segment" to the C stderr. Neither library exposes those warnings, so
`decoder_warnings` captures file descriptor 2 around one decode call and returns what libjpeg printed there (any
unrelated text is passed on to the real stderr unchanged).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

# the libjpeg(-turbo) warning texts (jerror.h JWRN_*) that mean the image data is damaged
WARNING_MARKERS = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid JPEG", "Bogus", "Warning:",
                   "JPEG datastream contains no image", "Unsupported marker")
_SINK: dict[int, tempfile._TemporaryFileWrapper] = {}  # one capture file per process (reused, truncated per call)


def _sink() -> tempfile._TemporaryFileWrapper:
    pid = os.getpid()
    if pid not in _SINK:
        _SINK.clear()
        _SINK[pid] = tempfile.TemporaryFile(mode="w+b")
    return _SINK[pid]


@contextlib.contextmanager
def decoder_warnings() -> Iterator[list[str]]:
    """`with decoder_warnings() as found: cv2.imdecode(...)`; afterwards `found` holds libjpeg's warning lines."""
    found: list[str] = []
    sink = _sink()
    sink.seek(0)
    sink.truncate()
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield found
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        text = sink.read().decode(errors="replace")
        other = []
        for line in text.splitlines():
            (found if any(m in line for m in WARNING_MARKERS) else other).append(line)
        if other:
            print("\n".join(other), file=sys.stderr)
