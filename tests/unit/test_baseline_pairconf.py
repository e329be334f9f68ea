"""The conntrackd + keepalived baseline's configuration (text only; no root, no namespaces)."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from fwcluster.bench.baseline import pairconf, pairnet, pairtrial
from fwcluster.bench.capture import Seen
from fwcluster.cli.bench_cmd import _advert_ints
from fwcluster.testbed import addressing as a


def plans(tmp_path: Path, advert: float = 1.0, conntrackd: bool = True) -> list[pairconf.NodePlan]:
    return pairnet.node_plans(tmp_path, advert, conntrackd)


def test_each_node_has_its_own_files(tmp_path: Path) -> None:
    na, nb = plans(tmp_path)
    assert na.directory != nb.directory
    for n in (na, nb):
        conf = pairconf.render_conntrackd(n)
        assert f"Path {n.socket}" in conf
        assert f"LockFile {n.lock}" in conf
        assert str(n.directory) in conf.split("LogFile", 1)[1].splitlines()[0]
        argv = n.keepalived_argv()
        assert all(
            str(n.directory) in argv[argv.index(opt) + 1] for opt in ("--pid", "--vrrp_pid", "--use-file")
        )
        assert "/etc" not in conf + pairconf.render_keepalived(n) + pairconf.render_notify(n)


def test_conntrackd_ftfw_over_the_dedicated_link(tmp_path: Path) -> None:
    na, nb = plans(tmp_path)
    conf = pairconf.render_conntrackd(na)
    assert "Mode FTFW" in conf
    assert f"IPv4_address {na.sync_addr}" in conf
    assert f"IPv4_Destination_Address {nb.sync_addr}" in conf
    assert "Interface sync" in conf
    ignored = conf.split("Address Ignore", 1)[1]
    for addr in ("127.0.0.1", pairnet.LAN_VIP, pairnet.WAN_VIP, na.sync_addr, nb.sync_addr):
        assert f"IPv4_address {addr}\n" in ignored
    assert conf.count("{") == conf.count("}")


def test_keepalived_sync_group_and_advert(tmp_path: Path) -> None:
    na, nb = plans(tmp_path, advert=0.1)
    ka, kb = pairconf.render_keepalived(na), pairconf.render_keepalived(nb)
    assert "vrrp_version 3" in ka  # sub-second adverts need VRRPv3
    assert ka.count("advert_int 0.1\n") == 2
    assert "state MASTER" in ka and "state BACKUP" not in ka
    assert "state BACKUP" in kb and "priority 100" in kb and "priority 150" in ka
    for event, arg in (("master", "primary"), ("backup", "backup"), ("fault", "fault")):
        assert f'notify_{event} "{na.notify_script} {arg}"' in ka
    assert f"{pairnet.LAN_VIP}/24 dev lan" in ka and f"{pairnet.WAN_VIP}/24 dev wan" in ka
    assert ka.count("{") == ka.count("}")
    with pytest.raises(ValueError, match="advert_int"):
        pairconf.render_keepalived(pairnet.node_plans(tmp_path, 0.001, True)[0])


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed")
def test_keepalived_accepts_the_config(tmp_path: Path) -> None:
    for advert in (1.0, 0.1):
        for n in plans(tmp_path, advert):
            n.directory.mkdir(exist_ok=True)
            n.keepalived_conf.write_text(pairconf.render_keepalived(n))
            n.notify_script.write_text(pairconf.render_notify(n))
            n.notify_script.chmod(0o700)
            done = subprocess.run(
                ["keepalived", "--config-test", "-f", str(n.keepalived_conf)],
                capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip
            # outside the node's namespace its interfaces do not exist: the only complaint allowed
            complaints = [ln for ln in done.stderr.splitlines() if ln.strip() and "interface" not in ln]
            assert not complaints, done.stderr


def test_notify_script_is_primary_backup_sh(tmp_path: Path) -> None:
    na, _ = plans(tmp_path)
    script = pairconf.render_notify(na)
    primary = script.split("primary)", 1)[1].split(";;", 1)[0]
    steps = [ln.split(" -C ", 1)[1].split()[1] for ln in primary.splitlines() if " -C " in ln]
    assert steps == ["-c", "-f", "-R", "-B"]
    backup = script.split("backup)", 1)[1].split(";;", 1)[0]
    assert " -d " in backup and " -t " in backup and " -n " in backup
    control = pairconf.render_notify(plans(tmp_path, conntrackd=False)[0])
    assert "conntrackd" not in control and "notify $1" in control


def test_addresses_apart_from_the_testbed() -> None:
    ours = [
        ipaddress.ip_network(f"{net}.0/24") for net in (pairnet.LAN_NET, pairnet.WAN_NET, pairnet.SYNC_NET)
    ]
    v4, _ = a.benchmark_ranges()
    testbed = [a.client_net().v4, a.server_net().v4, a.mgmt_net().v4]
    for k in range(1, a.MAX_INSTANCES + 1):
        testbed += [a.lb_fw_net(k).v4, a.fw_rt_net(k).v4]
    for net in ours:
        assert net.subnet_of(v4)
        assert not any(net.overlaps(t) for t in testbed)
    assert all(not ns.startswith(a.NETNS_PREFIX) for ns in pairnet.ALL_NETNS)


def test_variants_and_control() -> None:
    vs = pairtrial.variants((1.0, 0.1))
    assert [(v.conntrackd, v.advert_int) for v in vs] == [(True, 1.0), (True, 0.1), (False, 0.1)]
    assert vs[2].name == "keepalived-only/advert_int=0.1"


def test_long_flows_leave_short_requests_out() -> None:
    long = [Seen(i / 10, "s.80", "c.1000") for i in range(pairtrial.LONG_FLOW_PACKETS)]
    short = [Seen(1.0, "s.80", "c.2000")]
    late = [Seen(9.0, "s.80", "c.3000")] * pairtrial.LONG_FLOW_PACKETS
    assert pairtrial.long_flows(long + short + late, 8.0) == {frozenset(("s.80", "c.1000"))}


def test_side_by_side_rows() -> None:
    fw = {"long_downloads_lost": [0.0, 1.0], "steady_requests_failed": [0.0, 2.0],
          "reroute_gap_ms": [40.0, 60.0], "tcp_stall_ms": [800.0, 900.0]}  # fmt: skip
    ours = {"established": {"raw": fw}}
    raw = {"steady_requests_failed": [1.0], "forwarding_gap_ms": [300.0], "tcp_stall_ms": [500.0]}
    base = {"variants": {"conntrackd/advert_int=0.1": {"downloads": 20, "intact": 20, "raw": raw}}}
    rows = pairtrial.side_by_side(ours, base)
    assert rows[0]["setup"] == "fwcluster/established" and rows[0]["intact"] == 39
    assert rows[0]["forwarding_gap_ms"]["median"] == 50.0
    assert rows[1]["intact"] == 20 and rows[1]["tcp_stall_ms"]["n"] == 1


def test_advert_int_option() -> None:
    assert _advert_ints("1,0.1,1") == (1.0, 0.1)
    for bad in ("x", "0", "300"):
        with pytest.raises(Exception, match="seconds"):
            _advert_ints(bad)
