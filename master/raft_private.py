"""The pysyncobj internals gfs touches, behind one door (pysyncobj is pinned in
requirements.txt): name-mangled attributes of SyncObj and its TCP transport."""
from __future__ import annotations

import socket
import zlib
from typing import TYPE_CHECKING, Callable

import pysyncobj.pickle as _pickle_module
import pysyncobj.syncobj as _syncobj_module
import pysyncobj.tcp_connection as _tcp_module
from pysyncobj import SyncObj

if TYPE_CHECKING:
    from master.raft import DeferredAckTransport


class _StoredFrames:
    """What pysyncobj's TCP connections call `zlib`: a frame goes out as a zlib stream of
    stored (uncompressed) blocks, which every pysyncobj reader decompresses as before, instead
    of deflate level 3 — which cost the tick thread ~14 µs per small message and ~1.1 ms per
    64 KiB of entries (inline files' bytes do not compress), for bytes a LAN does not miss."""

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return zlib.compress(data, 0)

    decompress = staticmethod(zlib.decompress)


PICKLE_PROTOCOL = 4         # what pysyncobj pickles messages and commands with (see below)
READ_BUDGET = 4 << 20       # bytes read from one connection before its messages are handled
RECEIVE_BUFFER = 1 << 20    # bytes one receive may take (a connection's buffer, kept)


def _read_within_budget(connection) -> None:
    """TcpConnection.__tryReadBuffer, bounded (PrivateRaftState.bound_reads), into a receive
    buffer the connection keeps. pysyncobj's `socket.recv(4 MiB)` allocates a fresh 4 MiB bytes
    object per call — one more for the call that finds the socket empty — which malloc takes
    and returns as an mmap each time: at one stat per read-index round that was four mmap and
    munmap pairs per read on the leader, each munmap a TLB shootdown on every core, for
    messages of a few dozen bytes. A short receive means the socket is empty for now: the
    poller is level-triggered, so anything arriving later wakes the next poll."""
    sock = connection._TcpConnection__socket
    buffer = getattr(connection, "_gfs_receive_buffer", None)
    if buffer is None:
        buffer = connection._gfs_receive_buffer = bytearray(RECEIVE_BUFFER)
    view = memoryview(buffer)
    received = 0
    while received < READ_BUDGET:
        try:
            n = sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            connection.disconnect()
            return
        if not n or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            connection.disconnect()
            return
        connection._TcpConnection__readBuffer += view[:n]
        received += n
        if n < len(buffer):
            break
    connection._TcpConnection__lastReadTime = _syncobj_module.monotonicTime()


class PrivateRaftState:
    """The pysyncobj internals gfs needs at start-up, behind one door (pysyncobj is pinned)."""

    @staticmethod
    def send_frames_uncompressed() -> None:
        """Raft frames this process sends are not deflated (see _StoredFrames)."""
        _tcp_module.zlib = _StoredFrames

    @staticmethod
    def pickle_bytes_as_bytes() -> None:
        """pysyncobj pickles with protocol 2 (for Python 2 peers), which has no bytes type: it
        stores bytes as a call decoding a latin-1 *text* string, UTF-8 encoded in the pickle —
        every byte ≥ 0x80 twice as long, and an encode and a decode of each. A log entry's
        command (msgpack bytes) is pickled so, and again inside the AppendEntries message that
        carries it; a 4 KiB inline file was ~9 KiB on the wire and the UTF-8 decoding alone 9 %
        of a follower's CPU. Protocol 4 stores bytes as bytes; every Python 3 reader (pysyncobj
        unpickles with plain `pickle.loads`) reads it and the protocol-2 entries already in a
        journal alike."""
        setattr(_pickle_module, "__protocol", PICKLE_PROTOCOL)

    @staticmethod
    def bound_reads() -> None:
        """pysyncobj reads a readable connection until its socket is empty before it handles
        any message in it, appending every read to one bytes buffer (each append copies all of
        it). A leader sending a snapshot over loopback fills the socket as fast as a follower
        empties it, so the follower read for seconds without handling a single piece (a test:
        96 MiB in one poll, 30 s): its election deadline passed (it campaigned and deposed the
        leader) and it said nothing to the leader, which dropped the connection — the transfer
        started over, every ~4 s, at 10,000,000 files for ever. Now at most READ_BUDGET bytes
        (one 4 MiB receive) are read before the messages are handled; the poller is
        level-triggered, so what is left is read at the next poll."""
        _tcp_module.TcpConnection._TcpConnection__tryReadBuffer = _read_within_budget

    @staticmethod
    def send_backlog(transport, node) -> int:
        """Bytes queued on the connection to `node` that the socket has not taken yet, after
        handing the socket what it takes now (pysyncobj only does that when it next polls)."""
        connection = transport._connections.get(node)
        if connection is None:
            return 0
        if connection._TcpConnection__writeBuffer:
            connection._TcpConnection__trySendBuffer()
        return len(connection._TcpConnection__writeBuffer)

    @staticmethod
    def use_serializer(node: SyncObj, serializer) -> None:
        """Replace the Serializer pysyncobj built from its config (master/snapshot_writer.py)."""
        node._SyncObj__serializer = serializer

    @staticmethod
    def forget_last_snapshot(node: SyncObj) -> None:
        """Let the next compaction write a snapshot even if no entry was applied since the last
        one (pysyncobj skips it then: a snapshot moved aside would wait for the next write)."""
        node._SyncObj__lastSerializedEntry = None

    @staticmethod
    def disable_dump_loading(node: SyncObj) -> None:
        node._SyncObj__needLoadDumpFile = False

    @staticmethod
    def start_after(node: SyncObj, applied: int) -> None:
        """Tell pysyncobj that entries up to `applied` are already in the state machine."""
        node._SyncObj__raftLastApplied = applied
        last = node._SyncObj__raftLog[-1][1]
        commit = node._SyncObj__raftCommitIndex
        node._SyncObj__raftCommitIndex = min(max(commit, applied), last)

    @staticmethod
    def rewind_applied(node: SyncObj, applied: int) -> None:
        """Entries after `applied` were lost from the state machine (a failed commit): pysyncobj
        applies them again from its log."""
        node._SyncObj__raftLastApplied = min(node._SyncObj__raftLastApplied, applied)

    @staticmethod
    def mark_fresh(connection) -> None:
        """Reset a TCP connection's idle clock (see DeferredAckTransport)."""
        if connection is not None:
            connection._TcpConnection__lastReadTime = _syncobj_module.monotonicTime()

    @staticmethod
    def transport(node: SyncObj) -> DeferredAckTransport:
        return node._SyncObj__transport

    @staticmethod
    def wake(node: SyncObj) -> None:
        """Wake the tick thread from its poll (as pysyncobj does for a new command)."""
        try:
            node._SyncObj__pipeNotifier.notify()
        except (AttributeError, BlockingIOError):     # no notifier, or already a wake-up queued
            pass

    @staticmethod
    def own_term_committed(node: SyncObj) -> bool:
        """Has the leader committed the no-op it appended when elected (so its commit index
        covers every entry earlier leaders committed)?"""
        noop = node._SyncObj__noopIDx
        return noop is not None and node._SyncObj__raftCommitIndex >= noop

    @staticmethod
    def followers(node: SyncObj) -> list:
        return list(node._SyncObj__otherNodes)

    @staticmethod
    def message_handler(transport) -> Callable:
        return transport._onMessageReceivedCallback

    @staticmethod
    def match_indexes(node: SyncObj) -> dict[str, int]:
        """The leader's match index of each follower (empty on a follower)."""
        return {n.address: i for n, i in dict(node._SyncObj__raftMatchIndex).items()}

    @staticmethod
    def connected(node: SyncObj) -> set[str]:
        return {n.address for n in set(node._SyncObj__connectedNodes)}

    @staticmethod
    def last_log_index(node: SyncObj) -> int:
        return node._SyncObj__raftLog[-1][1]

    @staticmethod
    def postpone_election(node: SyncObj, seconds: float) -> None:
        node._SyncObj__raftElectionDeadline = _syncobj_module.monotonicTime() + seconds

    @staticmethod
    def election_due(node: SyncObj) -> bool:
        """Has this member's election deadline passed (it campaigns at its next tick)?"""
        return node._SyncObj__raftElectionDeadline < _syncobj_module.monotonicTime()

    @staticmethod
    def read_waiting(node: SyncObj) -> None:
        """Handle what has arrived on the node's connections, without waiting for more."""
        node._poller.poll(0)

    @staticmethod
    def cap_commit(node: SyncObj, below: int) -> None:
        """Keep the commit index below log index `below` (see DurableJournal.unverified_index)."""
        if node._SyncObj__raftCommitIndex >= below:
            node._SyncObj__raftCommitIndex = below - 1

    @staticmethod
    def follow_members(node: SyncObj, others: set[str]) -> None:
        """Make pysyncobj's own view of the group (the other members: who gets votes requests
        and appends, what a majority is) the members named by raft address in `others`."""
        have = {n.address: n for n in node._SyncObj__otherNodes}
        if have.keys() == others:
            return
        wanted = {have.get(a) or node._SyncObj__nodeClass(a) for a in others}
        added = {n for n in wanted if n.address not in have}
        node._SyncObj__updateClusterConfiguration(wanted)
        if node._isLeader():            # pysyncobj's leader keeps a reply clock per follower
            now = _syncobj_module.monotonicTime()
            for n in added:
                node._SyncObj__lastResponseTime[n] = now

    @staticmethod
    def apply_membership_change(node: SyncObj, request) -> bool:
        """pysyncobj's own handling of one membership entry (forward only)."""
        return SyncObj._SyncObj__doChangeCluster(node, request)
