"""The leader's side of sending its snapshot file to a follower, checked as it goes out.

pysyncobj asks the serializer (master/snapshot_writer.py `getTransmissionData`, in the tick
thread) for the next piece of the file for one follower at a time; several followers can be
sent the same file at once, each from its own position, and a transmission that is cancelled
(the follower disconnected) or finished starts again from the first byte. Each transmission is
an `OutgoingSnapshot` here: its own open file, position and hash (master/snapshot_format.py
SnapshotStream).

The file is checked on its way out, from the pieces themselves — no second read: the header as
soon as all of it went out, and the image's length and xxh3-128 against the header at the end
of the file, *before* the last (empty) piece is handed out. That piece is the one on which the
follower installs the snapshot, so a damaged file (bit rot, a write torn in a way that showed
later, a file cut short) is never installed, and the leader finds out at once instead of
sending it again and again to followers that each refuse it. Cost: about 0.03 ms of xxh3 per
1 MiB piece (pysyncobj already reads it), in the tick thread.
"""
from __future__ import annotations

import os

from master.snapshot_format import Header, SnapshotStream, check_image, parse_prefix


class OutgoingSnapshot:
    """One transmission of the snapshot file at `path` to one follower."""

    def __init__(self, path: str, name: str):
        """Opens the file (OSError if it cannot). `name` says which transmission it is in the
        errors it raises."""
        self._file = open(path, "rb")
        try:
            st = os.fstat(self._file.fileno())
        except BaseException:
            self._file.close()
            raise
        self._path = path
        self._identity = (st.st_dev, st.st_ino)
        self._name = name
        self._stream = SnapshotStream()
        self._header: Header | None = None
        self.position = 0

    def next_piece(self, size: int) -> tuple[bytes, bool, bool]:
        """The next piece (data, first, last) as pysyncobj sends it; the last (empty) one only
        for a file that is whole. ValueError: not a snapshot, or its header is damaged or cut
        off; DataLoss: the image is not the one the header describes (damaged, cut off,
        padded); OSError: the file could not be read."""
        first = self.position == 0
        data = self._file.read(size)
        if data:
            self._stream.take(data)
            if self._header is None and self._stream.in_image:
                self._header = parse_prefix(self._stream.prefix, self._name)
            self.position += len(data)
            return data, first, False
        if self._header is None:
            raise ValueError(f"{self._name}: the file ends inside its header, at byte "
                             f"{self.position} (cut off)")
        check_image(self._header, self._stream.image(), self._name)
        return b"", first, True

    def in_place(self) -> bool:
        """Is the file being sent still the one at its path (not replaced, not moved aside)?"""
        try:
            st = os.stat(self._path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def close(self) -> None:
        self._file.close()
