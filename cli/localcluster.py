"""A whole cluster on this machine as background processes: `gfs cluster up/status/down`.

The layout of DIR is the cluster's record, so `up` on an existing DIR restarts the same
cluster (same ids, ports and data):

    DIR/cluster.json        every daemon's id, addresses and data directory
    DIR/admin.token         the token of the cluster's first administrator (0600)
    DIR/cluster.secret      the secret the daemons authenticate each other with (0600)
    DIR/tls/                with TLS: the local CA and the daemons' certificate and key
    DIR/master-N/           a master's data (raft/, meta/), pid file and daemon.log
    DIR/master-N/disk/      with FaultFS (tests, chaos): the data, on its own FaultFS mount
                            (backing files in DIR/master-N/faultfs/), pid file and log beside it

Tests and benchmarks use the same class to start real daemons.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

from gfs.auth.insecure import ENV_VAR as INSECURE_ENV
from gfs.auth.secret import SECRET_FILE_NAME, create_secret_file, load_secret_file
from gfs.auth.tls import TlsFiles, channel_credentials, make_local_ca
from gfs.auth.tokens import bearer, new_token
from gfs.config import write_private
from gfs.errors import FailedPrecondition, InvalidArgument, Unavailable
from proto import chunkserver_pb2 as cpb
from proto import chunkserver_pb2_grpc as cpb_grpc
from proto import identity_pb2_grpc as ipb_grpc
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc


_handed_out: set[int] = set()


PORT_RANGE_ENV = "GFS_PORT_RANGE"


def port_range() -> tuple[int, int]:
    """The ports local clusters pick from, as [low, high): GFS_PORT_RANGE ("LOW-HIGH"), else
    the 12,000 ports below the kernel's ephemeral range. Test workers running side by side
    each get a range of their own (tests/conftest.py), so none hands out a port another
    worker handed out a moment ago and its daemon has not bound yet."""
    text = os.environ.get(PORT_RANGE_ENV, "").strip()
    if text:
        try:
            low, high = (int(x) for x in text.split("-"))
        except ValueError:
            low = high = 0
        if not 1024 <= low < high <= 65536:
            raise InvalidArgument(f"{PORT_RANGE_ENV}={text!r}: expected LOW-HIGH with "
                                  f"1024 <= LOW < HIGH <= 65536")
        return low, high
    low, _high = _ephemeral_range()
    return max(1024, low - 12000), low


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, from port_range(): below the kernel's ephemeral range so that
    outgoing connections (which take ephemeral ports) cannot grab it before the daemon binds
    it."""
    low, high = port_range()
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise Unavailable("no free TCP port found")


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def option_flags(options: dict) -> list[str]:
    """{"dead-after": 3, "no-balance": True} -> ["--dead-after", "3", "--no-balance"]."""
    argv: list[str] = []
    for key, value in sorted(options.items()):
        argv += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return argv


def absolute_search_path(value: str) -> str:
    """PYTHONPATH with its relative entries made absolute (an empty one is the working
    directory). Daemons run in the cluster's directory: `PYTHONPATH=.` from a checkout would
    point there, and they would import the installed tree instead of that checkout's."""
    return os.pathsep.join(os.path.abspath(entry or os.curdir)
                           for entry in value.split(os.pathsep))


def pid_alive(pid: int, marker: str) -> bool:
    """True if `pid` runs and its command line mentions `marker` (guards against PID reuse)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        pass
    return marker in cmdline


class LocalCluster:
    """Start, inspect and stop a cluster whose daemons all run on this machine."""

    def __init__(self, data_dir: str | os.PathLike, host: str = "127.0.0.1", *,
                 insecure_no_auth: bool = False):
        """`insecure_no_auth`: a new cluster runs with --insecure-no-auth (gfs/auth/insecure.py);
        an existing one is started only in the mode it was created in."""
        self.dir = Path(data_dir).resolve()
        self.host = host
        self.want_insecure = insecure_no_auth
        self.spec_path = self.dir / "cluster.json"
        self.secret_path = self.dir / SECRET_FILE_NAME
        self.spec: dict = {}
        if self.spec_path.exists():
            self.spec = json.loads(self.spec_path.read_text())
        self._procs: dict[str, subprocess.Popen] = {}

    # --- layout --------------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return bool(self.spec)

    def create(self, masters: int = 3, chunkservers: int = 0, options: dict | None = None,
               master_hosts: list[tuple[str, list[str]]] | None = None,
               tls: bool = False, faultfs: bool = False) -> None:
        """Lay out a new cluster: ids, ports and data directories. `master_hosts` optionally
        puts each master on its own test host: (address, argv prefix that runs a command there,
        e.g. `ip netns exec NS`); such a host has its own port space, so fixed ports are used.
        `faultfs`: every daemon keeps its data on its own FaultFS mount (power loss and disk
        faults for tests; bench/chaos/faultfs/), chunkservers added later too."""
        if masters not in (1, 3, 5):
            raise FailedPrecondition("a cluster has 1, 3 or 5 masters")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.secret_path.exists():
            create_secret_file(self.secret_path)
        ms = []
        for i in range(1, masters + 1):
            if master_hosts:
                host, prefix = master_hosts[i - 1]
                ports = (7000, 7100, 7200)
            else:
                host, prefix = self.host, []
                ports = tuple(free_port(self.host) for _ in range(3))
            ms.append({"name": f"master-{i}", "id": i, "raft": f"{host}:{ports[0]}",
                       "grpc": f"{host}:{ports[1]}", "metrics": f"{host}:{ports[2]}",
                       "prefix": prefix, "data": str(self.dir / f"master-{i}")})
        cs = [{"name": f"chunkserver-{i}", "bind": f"{self.host}:{free_port(self.host)}",
               "metrics": f"{self.host}:{free_port(self.host)}", "rack": "",
               "data": str(self.dir / f"chunkserver-{i}")} for i in range(1, chunkservers + 1)]
        self.spec = {"masters": ms, "chunkservers": cs, "options": options or {}}
        if faultfs:
            self.spec["faultfs"] = True
            for d in ms + cs:
                d["faultfs"] = True
        if self.want_insecure:
            self.spec["insecure_no_auth"] = True
        if tls:
            hosts = [self.host] + [h for h, _ in master_hosts or []]
            self.spec["tls"] = vars(make_local_ca(self.dir / "tls", hosts))
        self._save()
        self.ensure_admin_token()

    @property
    def admin_token_path(self) -> Path:
        return self.dir / "admin.token"

    def ensure_admin_token(self) -> None:
        """The first administrator's token: made once, kept with the cluster (0600)."""
        if not self.admin_token_path.exists():
            write_private(self.admin_token_path, new_token() + "\n")

    @property
    def admin_token(self) -> str:
        return self.admin_token_path.read_text().strip()

    def cli_env(self, token: str | None = None) -> dict:
        """The environment for `gfs` commands against this cluster: its masters and a token
        (default: the administrator's; "" = anonymous)."""
        return {**os.environ, "GFS_MASTERS": ",".join(self.master_addresses()),
                "GFS_TOKEN": self.admin_token if token is None else token,
                **({"GFS_TLS_CA": self.tls.ca} if self.tls else {})}

    @contextmanager
    def signed_in(self) -> Iterator[None]:
        """Within the block, this process and those it starts act as the cluster's administrator
        (GFS_TOKEN), for code that builds its own clients (benchmarks, the chaos workload)."""
        before = os.environ.get("GFS_TOKEN")
        os.environ["GFS_TOKEN"] = self.admin_token
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("GFS_TOKEN", None)
            else:
                os.environ["GFS_TOKEN"] = before

    def client(self, **kwargs):
        """A Client of this cluster, signed in as its administrator unless told otherwise."""
        from gfs.client import Client
        kwargs.setdefault("token", self.admin_token)
        kwargs.setdefault("tls_ca", self.tls.ca if self.tls else None)
        return Client(self.master_addresses(), **kwargs)

    def add_chunkserver(self, rack: str = "", options: dict | None = None) -> str:
        """Lay out (not start) one more chunkserver; returns its name. `options`: flags of
        this chunkserver only (over the cluster's chunkserver options), e.g.
        {"capacity": "1GiB"}."""
        i = len(self.spec["chunkservers"]) + 1
        self.spec["chunkservers"].append({
            "name": f"chunkserver-{i}", "bind": f"{self.host}:{free_port(self.host)}",
            "metrics": f"{self.host}:{free_port(self.host)}", "rack": rack,
            "data": str(self.dir / f"chunkserver-{i}"), "options": dict(options or {}),
            **({"faultfs": True} if self.spec.get("faultfs") else {})})
        self._save()
        return f"chunkserver-{i}"

    def _save(self) -> None:
        tmp = self.spec_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.spec, indent=2))
        tmp.replace(self.spec_path)

    @property
    def tls(self) -> TlsFiles | None:
        """The daemons' TLS files, if the cluster serves TLS."""
        return TlsFiles(**self.spec["tls"]) if self.spec.get("tls") else None

    def channel(self, address: str) -> grpc.Channel:
        """A channel to one of the daemons (TLS when the cluster uses it)."""
        tls = self.tls
        if tls is None:
            return grpc.insecure_channel(address)
        # Its own subchannel pool: a connection refused while a daemon starts must not leave a
        # shared reconnect backoff that keeps the next health probe from even trying.
        return grpc.secure_channel(address, channel_credentials(tls.ca_pem()),
                                   [("grpc.use_local_subchannel_pool", 1)])

    @property
    def insecure_no_auth(self) -> bool:
        """Does the cluster run with --insecure-no-auth (no authentication at all)?"""
        return bool(self.spec.get("insecure_no_auth"))

    def mode_flags(self) -> list[str]:
        """The daemons' authentication flags: none (secure) or --insecure-no-auth."""
        return ["--insecure-no-auth"] if self.insecure_no_auth else []

    def tls_flags(self) -> list[str]:
        tls = self.tls
        return [] if tls is None else ["--tls-cert", tls.cert, "--tls-key", tls.key,
                                       "--tls-ca", tls.ca]

    def cluster_secret(self) -> bytes:
        """The secret the daemons share (tests and benchmarks sign daemon requests with it)."""
        return load_secret_file(self.secret_path)

    def master_addresses(self) -> list[str]:
        return [m["grpc"] for m in self.spec.get("masters", [])]

    def daemons(self) -> list[dict]:
        return list(self.spec.get("masters", [])) + list(self.spec.get("chunkservers", []))

    def processes(self) -> list[dict]:
        """Every process of the cluster: its daemons and its gateways."""
        return self.daemons() + list(self.spec.get("gateways", []))

    def chunkserver_addresses(self) -> list[str]:
        return [c["bind"] for c in self.spec.get("chunkservers", [])]

    def daemon(self, name: str) -> dict:
        for d in self.processes():
            if d["name"] == name:
                return d
        raise KeyError(name)

    def set_daemon_options(self, name: str, options: dict) -> None:
        """Flags for one daemon on top of the cluster's (from its next start on)."""
        self.daemon(name).setdefault("options", {}).update(options)
        self._save()

    # --- processes -----------------------------------------------------------------------------

    def master_argv(self, m: dict) -> list[str]:
        peers = ",".join(f"{p['raft']}@{p['grpc']}" for p in self.spec["masters"])
        argv = list(m.get("prefix") or []) + [
                sys.executable, "-m", "cli.main", "master", "--id", str(m["id"]),
                "--raft", m["raft"], "--peers", peers, "--grpc", m["grpc"],
                "--data", self.data_path(m), "--metrics", m["metrics"],
                "--admin-token-file", str(self.admin_token_path),
                "--cluster-secret-file", str(self.secret_path)] + self.tls_flags() \
            + self.mode_flags() + (["--join"] if m.get("join") else [])
        return argv + option_flags({**self.spec.get("options", {}).get("master", {}),
                                    **m.get("options", {})})

    def add_master(self) -> dict:
        """Lay out one more master that joins the running group (`gfs master add` it after
        starting it); the spec's masters are its --peers."""
        n = max(m["id"] for m in self.spec["masters"]) + 1
        ports = [free_port(self.host) for _ in range(3)]
        m = {"name": f"master-{n}", "id": n, "raft": f"{self.host}:{ports[0]}",
             "grpc": f"{self.host}:{ports[1]}", "metrics": f"{self.host}:{ports[2]}",
             "prefix": [], "data": str(self.dir / f"master-{n}"), "join": True,
             "faultfs": bool(self.spec.get("faultfs"))}
        self.spec["masters"].append(m)
        self._save()
        return m

    def forget_master(self, name: str) -> dict:
        """Drop a master removed from the group from the spec (stop it first); its entry."""
        m = self.daemon(name)
        self.spec["masters"] = [x for x in self.spec["masters"] if x["name"] != name]
        self._save()
        return m

    def chunkserver_argv(self, c: dict) -> list[str]:
        argv = [sys.executable, "-m", "cli.main", "chunkserver", "--data", self.data_path(c),
                "--masters", ",".join(self.master_addresses()), "--bind", c["bind"],
                "--metrics", c["metrics"], "--cluster-secret-file", str(self.secret_path),
                *self.tls_flags(), *self.mode_flags()]
        if c.get("rack"):
            argv += ["--rack", c["rack"]]
        options = {**self.spec.get("options", {}).get("chunkserver", {}), **c.get("options", {})}
        return argv + option_flags(options)

    # --- FaultFS disks (tests and the chaos suite) ----------------------------------------------

    def data_path(self, d: dict) -> str:
        """The directory the daemon keeps its data in (on its FaultFS mount, if it has one)."""
        return str(Path(d["data"]) / "disk") if d.get("faultfs") else d["data"]

    def disk(self, name: str):
        """The FaultFS mount under daemon `name`'s data (power_loss, enospc, eio, fsync_delay)."""
        from bench.chaos.faultfs import FaultFS
        d = self.daemon(name)
        if not d.get("faultfs"):
            raise FailedPrecondition(f"{name} does not run on FaultFS")
        root = Path(d["data"])
        return FaultFS(root / "faultfs" / "backing", root / "disk", root / "faultfs" / "state")

    def power_loss(self, names: list[str], mode: str = "all", seed: int | None = None) -> dict:
        """Cut the power of these daemons' machines at once: kill -9 them all, then drop from
        each one's disk what was not durable (FaultFS.power_loss; `mode` "all", "prefix" or
        "torn"). They stay down (start() or up() brings them back). Returns each disk's result."""
        for name in names:
            self.signal(name, signal.SIGKILL)
        for name in names:
            self._wait_gone(name, 10)
        return {name: self.disk(name).power_loss(mode, seed) for name in names}

    def unmount_disks(self) -> None:
        """Unmount every FaultFS disk (after the daemons stopped); never fails."""
        for d in self.daemons():
            if d.get("faultfs"):
                self.disk(d["name"]).unmount()

    def argv(self, d: dict) -> list[str]:
        if "listen" in d:
            return self.gateway_argv(d)
        return self.master_argv(d) if "raft" in d else self.chunkserver_argv(d)

    # --- the S3 gateway (`gfs cluster up --s3 HOST:PORT`, docs/s3.md) -----------------------------

    def set_s3(self, listen: str, domain: str | None = None) -> None:
        """Serve the S3 API on `listen` from the next `up` on (one gateway, route `s3`); with
        `domain`, virtual-host style too (BUCKET.DOMAIN)."""
        self.spec["gateways"] = [{"name": "gateway-s3", "listen": listen,
                                  "data": str(self.dir / "gateway-s3"),
                                  "metrics": f"{self.host}:{free_port(self.host)}",
                                  **({"s3-domain": domain} if domain else {})}]
        self._save()

    def gateway_argv(self, g: dict) -> list[str]:
        # its token comes in GFS_TOKEN (start()), never on a command line others can read
        return [sys.executable, "-m", "cli.main", "--masters", ",".join(self.master_addresses()),
                *(["--tls-ca", self.tls.ca] if self.tls else []), "gateway",
                "--listen", g["listen"], "--state-dir", str(Path(g["data"]) / "state"),
                "--s3-secret-file", str(self.secret_path),
                *(["--metrics", g["metrics"]] if g.get("metrics") else []),
                *(["--s3-domain", g["s3-domain"]] if g.get("s3-domain") else [])]

    def _ensure_s3_route(self) -> None:
        with self.client() as c:
            if not any(r["name"] == "s3" for r in c.routes()["routes"]):
                c.route_put({"name": "s3", "path": "/*", "to": ["builtin:s3"]})

    def _start_gateways(self, timeout: float) -> None:
        if not self.spec.get("gateways") or self.insecure_no_auth:
            return
        self._ensure_s3_route()
        for g in self.spec["gateways"]:
            self.start(g["name"])
            host, _, port = g["listen"].rpartition(":")
            end = time.monotonic() + timeout
            while True:
                try:
                    socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
                    break
                except OSError:
                    proc = self._procs.get(g["name"])
                    if proc is not None and proc.poll() is not None or time.monotonic() > end:
                        raise Unavailable(f"{g['name']} is not listening on {g['listen']}; see "
                                          f"{Path(g['data']) / 'daemon.log'}") from None
                    time.sleep(0.1)

    def pid(self, name: str) -> int | None:
        d = self.daemon(name)
        try:
            pid = int((Path(d["data"]) / "pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid, d["data"]) else None

    def start(self, name: str) -> int:
        """Start one daemon if it is not running; returns its pid."""
        pid = self.pid(name)
        if pid:
            return pid
        d = self.daemon(name)
        data = Path(d["data"])
        data.mkdir(parents=True, exist_ok=True)
        if d.get("faultfs"):
            self.disk(name).start()
        logf = open(data / "daemon.log", "ab")
        # The mode comes from the cluster's record only, never from this process's environment.
        env = {k: v for k, v in os.environ.items() if k != INSECURE_ENV}
        if env.get("PYTHONPATH"):
            env["PYTHONPATH"] = absolute_search_path(env["PYTHONPATH"])
        if "listen" in d:
            env["GFS_TOKEN"] = self.admin_token
        proc = subprocess.Popen(self.argv(d), stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=logf, start_new_session=True, cwd=str(self.dir),
                                env={**env, "PYTHONUNBUFFERED": "1"})
        logf.close()
        self._procs[name] = proc
        (data / "pid").write_text(str(proc.pid))
        return proc.pid

    def signal(self, name: str, sig: int) -> bool:
        pid = self.pid(name)
        if not pid:
            return False
        os.kill(pid, sig)
        return True

    def kill(self, name: str) -> None:
        """kill -9 one daemon and reap it."""
        if self.signal(name, signal.SIGKILL):
            self._wait_gone(name, 10)

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if self.signal(name, signal.SIGTERM) and not self._wait_gone(name, timeout):
            self.kill(name)

    def _wait_gone(self, name: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        proc = self._procs.get(name)
        while time.monotonic() < end:
            if proc is not None and proc.poll() is not None:
                self._procs.pop(name, None)
                return True
            if proc is None and self.pid(name) is None:
                return True
            time.sleep(0.02)
        return False

    def up(self, timeout: float = 30.0) -> None:
        if self.want_insecure and not self.insecure_no_auth:
            raise FailedPrecondition(f"the cluster in {self.dir} was created secure; it does "
                                     f"not start with --insecure-no-auth")
        self.ensure_admin_token()          # a cluster laid out before tokens existed
        for d in self.daemons():
            self.start(d["name"])
        self.wait_healthy(timeout)
        self._start_gateways(timeout)

    def down(self) -> None:
        for g in self.spec.get("gateways", []):
            self.stop(g["name"])
        for d in reversed(self.daemons()):
            self.signal(d["name"], signal.SIGTERM)
        for d in self.daemons():
            if not self._wait_gone(d["name"], 10):
                self.kill(d["name"])
        self.unmount_disks()

    # --- health --------------------------------------------------------------------------------

    def master_status(self, m: dict, timeout: float = 1.0) -> dict | None:
        try:
            with self.channel(m["grpc"]) as ch:
                s = pb_grpc.MasterStub(ch).Status(pb.Empty(), timeout=timeout).status
        except grpc.RpcError:
            return None
        return {"role": s.role, "term": s.term, "leader": s.leader_grpc,
                "commit_index": s.commit_index, "applied_index": s.applied_index,
                "log_entries": s.log_entries, "has_quorum": s.has_quorum,
                "auth": s.auth_mode}

    def leader(self) -> str | None:
        for m in self.spec.get("masters", []):
            st = self.master_status(m)
            if st and st["role"] == "leader" and st["has_quorum"]:
                return m["name"]
        return None

    def registered_chunkservers(self) -> set[str]:
        """Chunkservers the leader currently counts as alive."""
        leader = self.leader()
        if leader is None:
            return set()
        try:
            with self.channel(self.daemon(leader)["grpc"]) as ch:
                resp = pb_grpc.MasterStub(ch).Chunkservers(pb.Empty(), timeout=1,
                                                           metadata=bearer(self.admin_token))
        except grpc.RpcError:
            return set()
        return {s.address for s in resp.servers if s.alive}

    def _admin_ready(self) -> bool:
        """Does the leader know the administrator's token yet (its first start creates it)?"""
        leader = self.leader()
        if leader is None:
            return False
        try:
            with self.channel(self.daemon(leader)["grpc"]) as ch:
                me = ipb_grpc.IdentityStub(ch).WhoAmI(pb.Empty(), timeout=1,
                                                      metadata=bearer(self.admin_token))
        except grpc.RpcError:
            return False
        return me.admin

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every daemon answers, a leader with a quorum exists and every running
        chunkserver has registered with it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            sts = [self.master_status(m) for m in self.spec["masters"]]
            if all(sts) and any(s["role"] == "leader" and s["has_quorum"] for s in sts):
                want = {c["bind"] for c in self.spec.get("chunkservers", []) if self.pid(c["name"])}
                if self._admin_ready() and want <= self.registered_chunkservers():
                    return
            for d in self.daemons():
                proc = self._procs.get(d["name"])
                if proc is not None and proc.poll() is not None:
                    raise Unavailable(f"{d['name']} exited with code {proc.returncode}; "
                                      f"see {Path(d['data']) / 'daemon.log'}")
            time.sleep(0.1)
        raise Unavailable(f"cluster in {self.dir} not healthy after {timeout:.0f}s")

    def status(self) -> list[dict]:
        """Each daemon with its pid, addresses and health."""
        rows = []
        registered = self.registered_chunkservers()
        for m in self.spec.get("masters", []):
            pid = self.pid(m["name"])
            st = self.master_status(m) if pid else None
            health = "down" if not pid else ("unreachable" if st is None else
                                             ("ok" if st["has_quorum"] else "no-quorum"))
            rows.append({"name": m["name"], "kind": "master", "pid": pid, "grpc": m["grpc"],
                         "raft": m["raft"], "metrics": m["metrics"], "health": health,
                         **({k: st[k] for k in ("role", "term", "commit_index", "applied_index",
                                                "auth")}
                            if st else {})})
        for c in self.spec.get("chunkservers", []):
            pid = self.pid(c["name"])
            st = self.chunkserver_status(c) if pid else None
            health = "down" if not pid else ("unreachable" if st is None else
                                             ("ok" if c["bind"] in registered else "unregistered"))
            rows.append({"name": c["name"], "kind": "chunkserver", "pid": pid, "grpc": c["bind"],
                         "metrics": c["metrics"], "health": health,
                         **({"chunks": st.chunk_count, "used_bytes": st.used_bytes,
                             "auth": st.auth_mode} if st else {})})
        for g in self.spec.get("gateways", []):
            pid = self.pid(g["name"])
            rows.append({"name": g["name"], "kind": "gateway", "pid": pid, "grpc": g["listen"],
                         "metrics": g.get("metrics", ""), "health": "ok" if pid else "down"})
        return rows

    def chunkserver_status(self, c: dict, timeout: float = 1.0):
        try:
            with self.channel(c["bind"]) as ch:
                return cpb_grpc.ChunkserverStub(ch).Status(cpb.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None
