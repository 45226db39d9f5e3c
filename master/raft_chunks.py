"""Reassembly guard for the chunks pysyncobj sends a large log entry in.

A leader sends an entry whose command is at least `appendEntriesBatchSizeBytes` long as the
chunks of its pickle, labelled 'start', 'process' … 'finish'; the follower unpickles what it
gathered when 'finish' arrives. pysyncobj 0.3.17 labels a chunk 'finish' once the chunk's end
passes the length of the *command*, not of the pickled entry, which is a few dozen bytes longer.
For a command just under a multiple of the batch size (two batches or more), the chunk before
the last is already labelled 'finish': the follower unpickles a truncated entry (an error),
then the real last chunk (another error), and since the leader resends the very same chunks the
follower never gets past that entry until the leader compacts its log.

`LargeEntryChunks` sees every chunk before pysyncobj does and relabels a 'finish' whose bytes do
not unpickle yet as 'process', so pysyncobj keeps gathering until the entry is whole.
"""
from __future__ import annotations

import pysyncobj.pickle as sopickle


class LargeEntryChunks:
    """The bytes of the large entry each leader connection is sending (see the module doc)."""

    def __init__(self) -> None:
        self._gathered: dict[object, bytearray] = {}

    def see(self, node: object, message: dict) -> None:
        """Look at one append_entries message from `node`; relabel it in place if needed."""
        label, data = message.get("transmission"), message.get("data")
        if label is None or not isinstance(data, (bytes, bytearray)):
            return
        if label == "start":
            self._gathered[node] = bytearray(data)
            return
        gathered = self._gathered.get(node)
        if gathered is None:             # a chunk without its start: pysyncobj refuses it
            return
        gathered += data
        if label != "finish":
            return
        try:
            sopickle.loads(bytes(gathered))
        except Exception:                # truncated: more chunks follow
            message["transmission"] = "process"
            return
        del self._gathered[node]
