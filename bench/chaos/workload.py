"""The chaos suite's client workload: concurrent clients doing puts, gets, renames, deletes,
mkdirs, stats and lists, every operation recorded as invoke / ok / fail / info."""
from __future__ import annotations

import hashlib
import io
import random
import threading
import time
from dataclasses import dataclass, field

from bench.chaos.checker import Op
from gfs.client import Client
from gfs.errors import GfsError

DEFINITE_ERRORS = {"NOT_FOUND", "ALREADY_EXISTS"}


def blob_bytes(name: str, size: int) -> bytes:
    """Deterministic content for a blob, so the check at the end can regenerate it."""
    return random.Random(name).randbytes(size)


@dataclass
class BlobLedger:
    """What the cluster acknowledged about blobs (unique names, never overwritten)."""
    acked: dict[str, tuple[int, str]] = field(default_factory=dict)   # path -> (size, sha256)
    deleted: set[str] = field(default_factory=set)                     # acknowledged deletes
    uncertain: set[str] = field(default_factory=set)                   # outcome unknown
    # Acknowledged blobs whose rename (to the given name) or delete has an unknown outcome:
    # the final check still judges them (it must find the bytes under one of the two names;
    # a blob that may be deleted must read back right if it is there).
    maybe_moved: dict[str, str] = field(default_factory=dict)
    maybe_deleted: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Workload:
    def __init__(self, masters: list[str], seed: int, threads: int = 6, keys: int = 16,
                 op_deadline: float = 6.0, max_blob: int = 3 << 20, root: str = "",
                 client_kwargs: dict | None = None):
        """`root`: the directory the workload works under (a user's namespace when it runs with
        that user's token); `client_kwargs`: how its clients connect (token, tls_ca)."""
        self.masters = masters
        self.seed = seed
        self.threads = threads
        self.root = root.rstrip("/")
        self.lin_dir = f"{self.root}/lin"
        self.blob_dir = f"{self.root}/blob"
        self.client_kwargs = dict(client_kwargs or {})
        self.keys = [f"{self.lin_dir}/k{i}" for i in range(keys)]
        self.op_deadline = op_deadline
        self.max_blob = max_blob
        self.history: list[Op] = []
        self.blobs = BlobLedger()
        self.counts: dict[str, int] = {}
        self.unclean: list[str] = []     # operations that ended in anything but a GfsError
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self.t0 = time.monotonic()

    # --- running -----------------------------------------------------------------------------

    def client(self, **kwargs) -> Client:
        """A client of the cluster as the workload connects (its token, TLS)."""
        return Client(self.masters, **{**self.client_kwargs, **kwargs})

    def prepare(self) -> None:
        with self.client(deadline=60) as c:
            c.mkdir(self.lin_dir, parents=True)
            c.mkdir(self.blob_dir, parents=True)

    def start(self) -> None:
        self._workers = [threading.Thread(target=self._run, args=(p,), name=f"client-{p}")
                         for p in range(self.threads)]
        for w in self._workers:
            w.start()

    def stop(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(timeout=self.op_deadline * 3)

    def wait_stored_puts(self, n: int, timeout: float) -> int:
        """Wait until `n` more blob puts with data (at least one chunk) are acknowledged, or
        `timeout` seconds; returns how many were."""
        def stored() -> int:
            with self.blobs.lock:
                return sum(1 for size, _ in self.blobs.acked.values() if size)
        start, end = stored(), time.monotonic() + timeout
        while stored() - start < n and time.monotonic() < end:
            time.sleep(0.1)
        return stored() - start

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _run(self, process: int) -> None:
        rng = random.Random(self.seed * 1000 + process)
        with self.client(deadline=self.op_deadline, attempt_timeout=1.0) as c:
            n = 0
            while not self._stop.is_set():
                n += 1
                kind = rng.choices(["lin", "fresh_read", "blob_put", "blob_get", "blob_mv",
                                    "blob_rm", "meta"], weights=[10, 2, 3, 2, 1, 1, 2])[0]
                try:
                    getattr(self, f"_op_{kind}")(c, rng, process, n)
                except Exception as err:      # not a GfsError: an unclean error, a failure
                    self._count(f"{kind}:UNCLEAN_ERROR:{type(err).__name__}")
                    self.unclean.append(f"{kind}: {type(err).__name__}: {err}"[:300])

    def _record(self, op: Op, error: str | None) -> None:
        with self._lock:
            self.history.append(op)
        self._count(f"{op.f}:{op.status}" + (f":{error}" if error else ""))

    # --- linearizability keys ----------------------------------------------------------------

    def _op_lin(self, c: Client, rng: random.Random, process: int, n: int) -> None:
        key = rng.choice(self.keys)
        f = rng.choices(["write", "create", "write_tmp", "rename", "read", "delete"],
                        weights=[4, 1, 2, 2, 6, 1])[0]
        value = f"{process}-{n}" if f in ("write", "create", "write_tmp") else None
        self.run_lin_op(c, process, key, f, value)

    def _op_fresh_read(self, c: Client, rng: random.Random, process: int, n: int) -> None:
        """A read by a client that has just arrived: its first call goes to a random master
        (a follower must redirect it, never answer from its own state)."""
        with self.client(deadline=self.op_deadline, attempt_timeout=1.0) as fresh:
            self.run_lin_op(fresh, process, rng.choice(self.keys), "read", None)

    def run_lin_op(self, c: Client, process: int, key: str, f: str, value: str | None) -> Op:
        op = Op(process=process, key=key, f=f, value=value, invoke=self.now(), complete=None,
                status="info", output=None)
        try:
            op.output = self._execute(c, key, f, value)
            op.status = "ok"
        except GfsError as err:
            if err.code in DEFINITE_ERRORS:
                op.output, op.status = {"error": err.code}, "ok"
            else:
                # A put that failed before its commit was sent changed nothing: "fail".
                op.status = "fail" if getattr(err, "before_commit", False) else "info"
                op.output = {"error": err.code, "message": err.message}
        op.complete = self.now()
        self._record(op, op.output.get("error") if isinstance(op.output, dict) else None)
        return op

    @staticmethod
    def _execute(c: Client, key: str, f: str, value: str | None) -> dict:
        if f == "read":
            return {"ok": True, "value": c.read(key).decode()}
        if f == "write":
            c.put(io.BytesIO(value.encode()), key, overwrite=True)
        elif f == "create":
            c.put(io.BytesIO(value.encode()), key, overwrite=False)
        elif f == "write_tmp":
            c.put(io.BytesIO(value.encode()), key + ".tmp", overwrite=True)
        elif f == "rename":
            c.rename(key + ".tmp", key, overwrite=True)
        elif f == "delete":
            c.delete(key)
        return {"ok": True}

    # --- durability of larger files ----------------------------------------------------------

    def _op_blob_put(self, c: Client, rng: random.Random, process: int, n: int) -> None:
        name = f"{self.blob_dir}/p{process}-{n}"
        size = rng.choice([0, 1, rng.randrange(1, self.max_blob)])
        data = blob_bytes(name, size)
        ok = self._attempt(c, "blob_put", lambda: c.put(io.BytesIO(data), name))
        with self.blobs.lock:
            if ok:
                self.blobs.acked[name] = (size, hashlib.sha256(data).hexdigest())
            elif ok is None:
                self.blobs.uncertain.add(name)

    def _pick_blob(self, rng: random.Random) -> str | None:
        with self.blobs.lock:
            live = [b for b in self.blobs.acked if b not in self.blobs.deleted
                    and b not in self.blobs.uncertain]
        return rng.choice(live) if live else None

    def _op_blob_get(self, c: Client, rng: random.Random, process: int, n: int) -> None:
        name = self._pick_blob(rng)
        if name:
            size, digest = self.blobs.acked[name]
            ok = self._attempt(c, "blob_get", lambda: c.read(name))
            if ok is not None and ok is not False and hashlib.sha256(ok).hexdigest() != digest:
                self._count("blob_get:WRONG_BYTES")

    def _op_blob_mv(self, c: Client, rng: random.Random, process: int, n: int) -> None:
        name = self._pick_blob(rng)
        if not name:
            return
        with self.blobs.lock:
            self.blobs.uncertain.add(name)         # nobody else touches it while it moves
        dst = f"{name}.r{n}"
        ok = self._attempt(c, "blob_mv", lambda: c.rename(name, dst))
        with self.blobs.lock:
            if ok:
                self.blobs.acked[dst] = self.blobs.acked[name]
                self.blobs.deleted.add(name)
            elif ok is None:
                self.blobs.uncertain.add(dst)
                self.blobs.maybe_moved[name] = dst
            if ok is not None:      # a definite answer: the final check judges `name` again
                self.blobs.uncertain.discard(name)

    def _op_blob_rm(self, c: Client, rng: random.Random, process: int, n: int) -> None:
        name = self._pick_blob(rng)
        if not name:
            return
        with self.blobs.lock:
            self.blobs.uncertain.add(name)
        ok = self._attempt(c, "blob_rm", lambda: c.delete(name))
        with self.blobs.lock:
            if ok:
                self.blobs.deleted.add(name)
            elif ok is None:
                self.blobs.maybe_deleted.add(name)
            if ok is not None:
                self.blobs.uncertain.discard(name)

    def _op_meta(self, c: Client, rng: random.Random, process: int, n: int) -> None:
        what = rng.choice(["mkdir", "stat", "list"])
        if what == "mkdir":
            self._attempt(c, "mkdir", lambda: c.mkdir(f"{self.root}/d/p{process}/{n}", parents=True))
        elif what == "stat":
            self._attempt(c, "stat", lambda: c.stat(rng.choice([self.lin_dir, self.blob_dir, self.root or "/"])))
        else:
            self._attempt(c, "list", lambda: list(c.list(self.blob_dir)))

    def _attempt(self, c: Client, name: str, fn):
        """Run fn: its result if acknowledged, False on a definite refusal, None if unknown."""
        try:
            result = fn()
            self._count(f"{name}:ok")
            return result if result is not None else True
        except GfsError as err:
            definite = err.code in DEFINITE_ERRORS or getattr(err, "before_commit", False)
            self._count(f"{name}:{'fail' if definite else 'info'}:{err.code}")
            return False if definite else None

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
