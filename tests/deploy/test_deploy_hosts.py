"""deploy/ installed into namespaces that play a cluster of hosts, and real traffic through it.

    fwdep-cl --- fwdep-lb ===== fwdep-fw1, fwdep-fw2 ===== fwdep-rt --- fwdep-sv
                                   |         |
                                   fwdep-st (store: redis-server + a sentinel, the master)

Two firewall hosts, each with ``deploy/fwcluster.rules`` loaded as a host's filter unit loads it
(``iptables-restore``/``ip6tables-restore``) and ``fwcluster instance run`` started with the
example config (deploy/fwcluster.toml.example, its paths and addresses adapted); the router's two
halves (lb: client side, rt: server side) steer each flow to one host (symmetric steering, the
buckets split between the hosts); the store host runs a real redis-server with a password and a
sentinel made from deploy/sentinel.conf.example, and ``fwcluster master run``. systemd does not
run here (tests/unit/test_deploy.py verifies the units). Checked: the filter is in place before
the instance starts and drops what it would forward (fail closed), allowed TCP connections cross
both hosts and the fast path of the file carries their data, a port the policy does not allow
is refused. Everything started here is ended by its pid, and the namespaces are removed, also
when the test fails. Run under the testbed lock (flock /tmp/fwc-testbed.lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fwcluster.credentials import write_secret
from fwcluster.steering import Balancer, NextHop, Target, make_driver
from fwcluster.steering.spec import dump_spec

pytestmark = pytest.mark.netns

DEPLOY = Path(__file__).parents[2] / "deploy"
P = "fwdep-"
CL, LB, RT, SV, ST = (P + n for n in ("cl", "lb", "rt", "sv", "st"))
HOSTS = (1, 2)
STORE = "198.19.240.1"  # the store host's service address (on its loopback)
SERVER = "198.19.0.2"  # inside the example config's allowed dst 198.19.0.0/24, port 80
BUCKETS = 16
# deploy/fwcluster-instance@.service's CapabilityBoundingSet and NoNewPrivileges, without systemd:
# root keeps only the capabilities of its bounding set across the exec.
BOUNDED = ["setpriv", "--bounding-set=-all,+net_admin,+net_raw", "--no-new-privs", "--"]


def fw(k: int) -> str:
    return f"{P}fw{k}"


def sh(netns: str | None, *argv: str, stdin: str | None = None) -> str:
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    p = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(full)}: {(p.stderr or p.stdout).strip()}")
    return p.stdout


def link(a: str, a_if: str, b: str, b_if: str, net4: str, net6: str) -> None:
    """A veth pair between namespaces a (address .1 / ::1) and b (.2 / ::2) on net4.0/24, net6::/64."""
    sh(None, "ip", "link", "add", "fwdep-tmp0", "type", "veth", "peer", "name", "fwdep-tmp1")
    sh(None, "ip", "link", "set", "fwdep-tmp0", "netns", a, "name", a_if)
    sh(None, "ip", "link", "set", "fwdep-tmp1", "netns", b, "name", b_if)
    for ns, dev, end in ((a, a_if, 1), (b, b_if, 2)):
        sh(ns, "ip", "addr", "add", f"{net4}.{end}/24", "dev", dev)
        sh(ns, "ip", "-6", "addr", "add", f"{net6}::{end}/64", "dev", dev, "nodad")
        sh(ns, "ip", "link", "set", dev, "up")


def build() -> list[Target]:
    for ns in (CL, LB, RT, SV, ST, *(fw(k) for k in HOSTS)):
        sh(None, "ip", "netns", "add", ns)
        sh(ns, "ip", "link", "set", "lo", "up")
    for ns in (LB, RT, *(fw(k) for k in HOSTS)):
        sh(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    link(LB, "client", CL, "eth0", "198.19.201", "2001:2:0:c901")
    link(RT, "server", SV, "eth0", "198.19.0", "2001:2:0:300")  # the server is .2: SERVER
    sh(CL, "ip", "route", "add", "default", "via", "198.19.201.1")
    sh(SV, "ip", "route", "add", "default", "via", "198.19.0.1")
    sh(ST, "ip", "addr", "add", f"{STORE}/32", "dev", "lo")
    targets = []
    for k in HOSTS:
        link(LB, f"fw{k}", fw(k), "lb", f"198.19.21{k}", f"2001:2:0:c21{k}")
        link(RT, f"fw{k}", fw(k), "rt", f"198.19.22{k}", f"2001:2:0:c22{k}")
        link(ST, f"fw{k}", fw(k), "mgmt", f"198.19.23{k}", f"2001:2:0:c23{k}")
        sh(fw(k), "ip", "route", "add", "198.19.201.0/24", "via", f"198.19.21{k}.1")
        sh(fw(k), "ip", "route", "add", "198.19.0.0/24", "via", f"198.19.22{k}.1")
        sh(fw(k), "ip", "route", "add", f"{STORE}/32", "via", f"198.19.23{k}.1")
        lb_hop = NextHop(dev=f"fw{k}", via4=f"198.19.21{k}.2", via6=f"2001:2:0:c21{k}::2")
        rt_hop = NextHop(dev=f"fw{k}", via4=f"198.19.22{k}.2", via6=f"2001:2:0:c22{k}::2")
        targets.append(Target(id=f"fw{k}", mark=0x100 + k, table=100 + k, hops=((LB, lb_hop), (RT, rt_hop))))
    return targets


def teardown(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:  # only what this test started, each by its pid
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    for name in re.findall(rf"^({re.escape(P)}\S+)", listed, re.M):
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    teardown([])  # namespaces a crashed earlier run of this test left behind
    try:
        yield started
    finally:
        teardown(started)


def start(
    procs: list[subprocess.Popen[bytes]], netns: str, argv: list[str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # `ip netns exec` execs the command: the pid is its own
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=out, stderr=subprocess.STDOUT)
    procs.append(proc)
    return proc


def wait_for(what: str, check: Callable[[], bool], timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-1500:]}" for p in logs if p.exists())
            raise AssertionError(f"{what} not within {timeout:g} s\n{tails}")
        time.sleep(0.1)


def host_config(example: str, work: Path, k: int, password: str, token: Path, steering: Path) -> Path:
    """The example config as host fwK would install it: its id, its addresses, its files."""
    run = work / f"run-fw{k}"
    run.mkdir(mode=0o700)
    url = write_secret(work / f"fw{k}.store-url", f"redis://:{password}@store/0")
    three = '["198.18.254.10:26379", "198.18.254.11:26379", "198.18.254.12:26379"]'
    text = example.replace(f"sentinels = {three}", f'sentinels = ["{STORE}:26379"]')
    assert f'sentinels = ["{STORE}:26379"]' in text
    text = text.replace('id = "fw1"', f'id = "fw{k}"').replace("/run/fwcluster", str(run))
    text = text.replace("/etc/fwcluster/fw1.store-url", str(url)).replace(
        "/etc/fwcluster/m1.store-url", str(url)
    )
    text = text.replace("/etc/fwcluster/api.token", str(token)).replace(
        "/etc/fwcluster/steering.json", str(steering)
    )
    # the master runs on the store host (k = 0), an instance serves metrics on its mgmt link
    text = text.replace("198.18.254.21", STORE if k == 0 else f"198.19.23{k}.2")
    return write_secret(work / f"fw{k}.toml", text)


def connect(port: int, timeout: float) -> bool:
    p = subprocess.run(
        ["ip", "netns", "exec", CL, sys.executable, "-c",
         f"import socket; socket.create_connection(('{SERVER}', {port}), timeout={timeout}).close()"],
        capture_output=True, timeout=timeout + 20, check=False,
    )  # fmt: skip
    return p.returncode == 0


def fetch(path: str) -> bytes:
    p = subprocess.run(
        ["ip", "netns", "exec", CL, "curl", "-sS", "--max-time", "20", f"http://{SERVER}/{path}"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return p.stdout


def forward_counters(netns: str) -> dict[str, int]:
    """Packets per FORWARD rule of the loaded file (iptables -v): fast path and queue."""
    out = sh(netns, "iptables", "-w", "-L", "FORWARD", "-n", "-v", "-x")
    counts = {"queue": 0, "fast": 0}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[0].isdigit():
            if "NFQUEUE" in line:
                counts["queue"] += int(fields[0])
            elif "ACCEPT" in line and "0x1/0x1" in line:
                counts["fast"] += int(fields[0])
    return counts


def test_two_hosts_from_deploy_carry_traffic(procs: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    work = tmp_path
    work.chmod(0o700)
    targets = build()
    password = secrets.token_hex(16)

    # The store host: redis-server with a password, a sentinel made from the example.
    store_dir = work / "store"
    store_dir.mkdir(mode=0o700)
    redis_conf = write_secret(
        work / "redis.conf",
        f'bind {STORE}\nport 6379\nrequirepass {password}\nsave ""\nappendonly no\ndir {store_dir}\n',
    )
    sentinel = (DEPLOY / "sentinel.conf.example").read_text()
    for old, new in (
        ("198.18.254.10", STORE),
        ("STORE-PASSWORD", password),
        ("/var/lib/redis", str(store_dir)),
    ):
        assert old in sentinel
        sentinel = sentinel.replace(old, new)
    sentinel = sentinel.replace(
        f"sentinel monitor fwc {STORE} 6379 2", f"sentinel monitor fwc {STORE} 6379 1"
    )
    sentinel_conf = write_secret(work / "sentinel.conf", sentinel)
    logs = [work / n for n in ("redis.log", "sentinel.log", "fw1.log", "fw2.log", "m1.log")]
    start(procs, ST, ["redis-server", str(redis_conf)], logs[0])
    start(procs, ST, ["redis-sentinel", str(sentinel_conf)], logs[1])

    def primary_known() -> bool:
        env = {**os.environ, "REDISCLI_AUTH": password}
        p = subprocess.run(
            ["ip", "netns", "exec", ST, "redis-cli", "-h", STORE, "-p", "26379", "sentinel",
             "get-master-addr-by-name", "fwc"],
            capture_output=True, text=True, env=env, timeout=10, check=False,
        )  # fmt: skip
        return STORE in p.stdout

    wait_for("the sentinel naming the primary", primary_known, 30, logs[:2])

    # The filter, as fwcluster-filter.service loads it, before any instance runs: fail closed.
    rules = DEPLOY / "fwcluster.rules"
    for k in HOSTS:
        sh(fw(k), "sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_loose=1")
        sh(fw(k), "iptables-restore", str(rules))
        sh(fw(k), "ip6tables-restore", str(rules))

    # Steering on the router: every bucket to one of the hosts; the description for the master.
    driver = make_driver(
        "symmetric", [Balancer(LB, "client"), Balancer(RT, "server", "reverse")], BUCKETS, targets
    )
    driver.install(targets)
    driver.assign({b: f"fw{1 + b % 2}" for b in range(BUCKETS)})
    steering = work / "steering.json"
    steering.write_text(json.dumps(dump_spec("symmetric", driver.balancers, BUCKETS, targets)))

    www = work / "www"
    www.mkdir()
    (www / "index.html").write_text("x")
    (www / "big.bin").write_bytes(os.urandom(400_000))
    www.chmod(0o755)
    for port in (80, 8080):
        argv = [sys.executable, "-m", "http.server", str(port), "--bind", SERVER, "-d", str(www)]
        logs.append(work / f"server{port}.log")
        start(procs, SV, argv, logs[-1])

    def listening() -> bool:
        out = sh(SV, "ss", "-Hltn")
        return f"{SERVER}:80 " in out and f"{SERVER}:8080 " in out

    wait_for("the servers listening", listening, 30, logs)
    assert not connect(80, 2.0), "forwarded before any instance read the queue"

    # The hosts' instances and the master, each from its host's copy of the example config.
    example = (DEPLOY / "fwcluster.toml.example").read_text()
    token = write_secret(work / "api.token", secrets.token_hex(24))
    fwcluster = [sys.executable, "-m", "fwcluster"]
    instances = {}
    for k in HOSTS:
        config = host_config(example, work, k, password, token, steering)
        # as its unit runs it: CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW, NoNewPrivileges
        argv = [*BOUNDED, *fwcluster, "instance", "run", "--config", str(config)]
        instances[k] = start(procs, fw(k), argv, logs[1 + k])
    for k in HOSTS:
        sock = work / f"run-fw{k}" / f"fw{k}.sock"
        wait_for(f"instance fw{k} ready", sock.exists, 30, logs)
    master_config = host_config(example, work, 0, password, token, steering)
    start(procs, ST, [*fwcluster, "master", "run", "--config", str(master_config)], logs[4])
    status = work / "run-fw0" / "m1.master.json"

    def leads() -> bool:
        with contextlib.suppress(OSError, ValueError):
            return bool(json.loads(status.read_text()).get("leader"))
        return False

    wait_for("master m1 leading", leads, 30, logs)

    # Traffic: allowed connections cross both hosts; the data rides the file's fast path.
    for _ in range(30):
        assert fetch("index.html") == b"x"
    big = fetch("big.bin")
    assert big == (www / "big.bin").read_bytes()
    counters = {k: forward_counters(fw(k)) for k in HOSTS}
    assert all(c["queue"] > 0 for c in counters.values()), counters  # both hosts carried flows
    assert sum(c["fast"] for c in counters.values()) > 50, counters  # the big download's data
    assert not connect(8080, 3.0), "port 8080 is not allowed by the example policy"
    for proc in procs:
        assert proc.poll() is None, f"a process ended: {proc.args}"
    # the master sees both instances (its admin API on the store host, with the token file)
    p = subprocess.run(
        ["ip", "netns", "exec", ST, *fwcluster, "--api", f"http://{STORE}:9301", "--token-file", str(token),
         "status", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert {"fw1", "fw2"} <= set(p.stdout.replace('"', " ").split()), p.stdout

    # A host's instance dies (its unit would restart it): the master moves its buckets to the
    # other host, and connections go on through that one.
    victim = instances[1]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    wait_for("fw1's buckets on fw2", lambda: set(driver.table("forward").values()) == {"fw2"}, 30, logs)
    for _ in range(10):
        assert fetch("index.html") == b"x"
