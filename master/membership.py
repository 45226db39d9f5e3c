"""The Raft group's membership, durable across restarts of every member.

pysyncobj changes its group one server at a time with MEMBERSHIP log entries (`add`/`rem`),
in effect on every node as soon as the entry is in its log (Raft's single-server change) and
rolled back if the entry is cut as a conflict. It keeps the result only in memory, and a gfs
master restarts without replaying entries LMDB already holds, so on its own a restarted master
would come back with its start-up flags. gfs therefore keeps the membership the way Raft
defines it — the latest configuration in the log — from two durable pieces:

* the **base**: the members as of log index `index`, in `raft/members` (msgpack, replaced
  atomically). The first start writes it from `--peers`; log compaction folds the dropped
  membership entries into it (before they leave the journal); a snapshot install replaces it
  with the snapshot's membership;
* the **membership entries still in the journal** after the base's index, folded on top.

`MembershipLog` is told about every journal change (master/journal.py), so the current
configuration, or the one at any index the journal still covers, is always at hand.

An entry is pysyncobj's pickled `[kind, raft_address, node]`; gfs appends the member's gRPC
address as a fourth element (pysyncobj reads only the first three), so every master knows
where each member serves clients (leader redirects, `gfs master list`).
"""
from __future__ import annotations

import os
import threading

import msgpack
import pysyncobj.pickle as sopickle
from pysyncobj.transport import TCPNode

from master.journal import write_file_atomically

MEMBERSHIP_TYPE = 2          # pysyncobj's _COMMAND_TYPE.MEMBERSHIP
ADD, REMOVE = "add", "rem"


def encode_change(kind: str, raft: str, grpc_address: str) -> bytes:
    """The log command adding or removing member `raft` (gRPC at `grpc_address`)."""
    if kind not in (ADD, REMOVE):
        raise ValueError(f"a membership change is {ADD} or {REMOVE}, not {kind!r}")
    return bytes([MEMBERSHIP_TYPE]) + sopickle.dumps([kind, raft, TCPNode(raft), grpc_address])


def decode_change(command: bytes) -> tuple[str, str, str] | None:
    """(kind, raft address, gRPC address) of a membership entry; None for any other entry."""
    if not command or command[0] != MEMBERSHIP_TYPE:
        return None
    request = sopickle.loads(command[1:])
    grpc_address = request[3] if len(request) >= 4 and isinstance(request[3], str) else ""
    return request[0], str(request[1]), grpc_address


def fold(members: dict[str, str], kind: str, raft: str, grpc_address: str) -> dict[str, str]:
    """`members` after one change, by pysyncobj's rules (adding a member or removing a
    non-member changes nothing)."""
    out = dict(members)
    if kind == ADD and raft not in out:
        out[raft] = grpc_address
    elif kind == REMOVE:
        out.pop(raft, None)
    return out


def parse_members(spec: str) -> dict[str, str]:
    """`RAFT[@GRPC],...` -> {raft address: gRPC address or ""}."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        raft, _, grpc_address = item.partition("@")
        out[raft] = grpc_address
    return out


class MembershipLog:
    """The base configuration plus the membership entries in the journal (module docstring).
    Thread-safe: the tick thread changes it, gRPC threads read it."""

    FILE = "members"

    def __init__(self, directory: str, start_members: dict[str, str]):
        self._path = os.path.join(directory, self.FILE)
        self._lock = threading.Lock()
        self._changes: list[tuple[int, str, str, str]] = []   # (index, kind, raft, grpc)
        try:
            with open(self._path, "rb") as f:
                saved = msgpack.unpackb(f.read(), raw=False)
            self._base_index, self._base = int(saved["index"]), dict(saved["members"])
            self.from_flags = False
        except FileNotFoundError:
            self._base_index, self._base = 0, dict(start_members)
            self._store_base()
            self.from_flags = True

    # --- what the journal tells it ---------------------------------------------------------------

    def appended(self, command: bytes, index: int) -> None:
        change = decode_change(command)
        if change is not None and index > self._base_index:
            with self._lock:
                self._changes.append((index, *change))

    def truncated_from(self, index: int) -> None:
        """Entries from `index` on left the log (a conflicting tail, or the whole log)."""
        with self._lock:
            self._changes = [c for c in self._changes if c[0] < index]

    def compacting_to(self, first_kept: int) -> None:
        """Entries before `first_kept` are about to leave the journal: fold them into the base
        and make that durable first."""
        with self._lock:
            folded = [c for c in self._changes if c[0] < first_kept]
            if not folded:
                return
            for _, kind, raft, grpc_address in folded:
                self._base = fold(self._base, kind, raft, grpc_address)
            self._base_index = folded[-1][0]
            self._changes = [c for c in self._changes if c[0] >= first_kept]
            self._store_base()

    def reset(self, index: int, members: dict[str, str]) -> None:
        """A snapshot at `index` replaced the state: its membership is the new base."""
        with self._lock:
            self._base_index, self._base = index, dict(members)
            self._changes = []
            self._store_base()

    # --- what the node asks ------------------------------------------------------------------------

    def current(self) -> dict[str, str]:
        return self.at(None)

    def at(self, index: int | None) -> dict[str, str]:
        """The members as of log index `index` (None: the latest entry)."""
        with self._lock:
            members = dict(self._base)
            for i, kind, raft, grpc_address in self._changes:
                if index is not None and i > index:
                    break
                members = fold(members, kind, raft, grpc_address)
            return members

    def last_change_index(self) -> int:
        """Index of the newest membership entry in the log (0 if none since the base)."""
        with self._lock:
            return self._changes[-1][0] if self._changes else 0

    def _store_base(self) -> None:
        write_file_atomically(self._path, msgpack.packb(
            {"index": self._base_index, "members": self._base}, use_bin_type=True))
