"""The configuration of one node of the conntrackd + keepalived pair (sans-I/O: text only).

Everything a node's daemons read or write lives in its own directory (under a 0700 run dir):
keepalived's config and pid files, conntrackd's config, UNIX socket, lock file and log, and the
notify script. Nothing in /etc, /run or /var is used, so two nodes run side by side on one host
and the host's own conntrack is never touched (each daemon runs inside its node's namespace).

The notify script is conntrack-tools' ``doc/sync/primary-backup.sh`` (Debian:
/usr/share/doc/conntrackd/examples/sync/primary-backup.sh) with its paths per node and its
``logger`` calls written to the node's log instead of the host's syslog: on becoming primary,
commit the external cache into the kernel (``-c``), flush the caches (``-f``), resync the internal
cache with the kernel (``-R``) and send a bulk update to the backup (``-B``); on becoming backup,
start conntrackd if it is not running, shorten the kernel's timers (``-t``) and ask the primary
for a resync (``-n``); on a fault, ``-t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SYNC_PORT = 3780  # conntrackd's UDP port on the dedicated link (the examples' Group number)
LAN_VRID, WAN_VRID = 61, 62  # the examples' virtual router ids
# Only a SYN opens a connection, as in fwcluster's core (core/tcp.py): without this the kernel
# would pick a connection up from any mid-stream segment that the rules accept.
NODE_SYSCTLS = (
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/conf/default/rp_filter", "0"),
    ("net/netfilter/nf_conntrack_tcp_loose", "0"),
    ("net/netfilter/nf_conntrack_tcp_be_liberal", "0"),
)


@dataclass(frozen=True)
class NodePlan:
    """What one node runs: its name, addresses, priority and where its files go."""

    name: str  # "a" or "b"
    netns: str
    directory: Path  # 0700, root's
    priority: int  # VRRP: the higher one is master
    sync_addr: str  # this node on the dedicated link
    peer_sync_addr: str
    lan_vip: str  # with prefix: "198.19.200.1/24"
    wan_vip: str
    ignore: tuple[str, ...]  # addresses of the nodes themselves: their own traffic is not synced
    advert_int: float = 1.0
    conntrackd: bool = True  # False: keepalived alone (the control: no state follows the VIPs)

    @property
    def conntrackd_conf(self) -> Path:
        return self.directory / "conntrackd.conf"

    @property
    def keepalived_conf(self) -> Path:
        return self.directory / "keepalived.conf"

    @property
    def notify_script(self) -> Path:
        return self.directory / "primary-backup.sh"

    @property
    def socket(self) -> Path:
        return self.directory / "conntrackd.ctl"

    @property
    def lock(self) -> Path:
        return self.directory / "conntrackd.lock"

    @property
    def log(self) -> Path:
        return self.directory / "node.log"

    def keepalived_argv(self) -> list[str]:
        """keepalived in the foreground, VRRP only, its pid files in the node's directory."""
        d = self.directory
        return [
            "keepalived", "--dont-fork", "--vrrp", "--log-console", "--log-detail", "--no-syslog",
            "--use-file", str(self.keepalived_conf), "--pid", str(d / "keepalived.pid"),
            "--vrrp_pid", str(d / "vrrp.pid"), "--checkers_pid", str(d / "checkers.pid"),
        ]  # fmt: skip

    def conntrackd_argv(self, *command: str) -> list[str]:
        """conntrackd with this node's config: the daemon (in the foreground) without ``command``,
        a client request (``-c``, ``-s``, ...) with it."""
        return ["conntrackd", "-C", str(self.conntrackd_conf), *command]


def _advert(seconds: float) -> str:
    if not 0.01 <= seconds <= 255:
        raise ValueError(f"advert_int {seconds:g} is out of range 0.01..255 s")
    return f"{seconds:g}"


def render_keepalived(node: NodePlan) -> str:
    """Two VRRP instances (the client side and the server side) in one sync group, so that both
    gateways move together; the group's notify script is primary-backup.sh (without conntrackd,
    one that only notes the time of each transition).
    VRRP version 3: it is the one that allows advert intervals below a second."""
    advert = _advert(node.advert_int)
    state = "MASTER" if node.priority >= 150 else "BACKUP"
    notify = "".join(
        f'    notify_{event} "{node.notify_script} {arg}"\n'
        for event, arg in (("master", "primary"), ("backup", "backup"), ("fault", "fault"))
    )
    instances = []
    for name, iface, vrid, vip in (
        ("LAN", "lan", LAN_VRID, node.lan_vip),
        ("WAN", "wan", WAN_VRID, node.wan_vip),
    ):
        instances.append(
            f"vrrp_instance {name} {{\n"
            f"    interface {iface}\n"
            f"    state {state}\n"
            f"    virtual_router_id {vrid}\n"
            f"    priority {node.priority}\n"
            f"    advert_int {advert}\n"
            f"    virtual_ipaddress {{\n        {vip} dev {iface}\n    }}\n"
            "}\n"
        )
    return (
        "# generated by fwcluster bench failover --baseline conntrackd; do not edit\n"
        "global_defs {\n"
        f"    router_id fwb-{node.name}\n"
        "    vrrp_version 3\n"
        "    enable_script_security\n"
        "    script_user root\n"
        "}\n"
        "vrrp_sync_group G1 {\n"
        "    group {\n        LAN\n        WAN\n    }\n"
        f"{notify}"
        "}\n" + "".join(instances)
    )


def render_conntrackd(node: NodePlan) -> str:
    """FTFW over UDP on the dedicated link, the ftfw example's buffers and filter, with the
    node's own socket, lock file and log."""
    ignore = "".join(f"            IPv4_address {a}\n" for a in ("127.0.0.1", *node.ignore))
    return (
        "# generated by fwcluster bench failover --baseline conntrackd; do not edit\n"
        "Sync {\n"
        "    Mode FTFW {\n    }\n"
        "    UDP {\n"
        f"        IPv4_address {node.sync_addr}\n"
        f"        IPv4_Destination_Address {node.peer_sync_addr}\n"
        f"        Port {SYNC_PORT}\n"
        "        Interface sync\n"
        "        SndSocketBuffer 1249280\n"
        "        RcvSocketBuffer 1249280\n"
        "        Checksum on\n"
        "    }\n"
        "}\n"
        "General {\n"
        "    HashSize 32768\n"
        "    HashLimit 131072\n"
        f"    LogFile {node.directory / 'conntrackd.log'}\n"
        "    Syslog off\n"
        f"    LockFile {node.lock}\n"
        f"    UNIX {{\n        Path {node.socket}\n    }}\n"
        "    NetlinkBufferSize 2097152\n"
        "    NetlinkBufferSizeMaxGrowth 8388608\n"
        "    Filter From Userspace {\n"
        "        Protocol Accept {\n            TCP\n        }\n"
        f"        Address Ignore {{\n{ignore}        }}\n"
        "    }\n"
        "}\n"
    )


def render_notify(node: NodePlan) -> str:
    """primary-backup.sh for this node (see the module's doc); without conntrackd, a script that
    only notes each transition with its time in the node's log."""
    c = f'"/usr/sbin/conntrackd" -C "{node.conntrackd_conf}"'
    log = f'"{node.log}"'
    if not node.conntrackd:
        return f'#!/bin/sh\necho "$(date +%s.%N) notify $1" >> {log}\nexit 0\n'

    def step(arg: str, what: str) -> str:
        return f'    {c} {arg} || echo "$(date +%s.%N) ERROR: failed to invoke conntrackd {what}" >> {log}\n'

    return (
        "#!/bin/sh\n"
        "# conntrack-tools' primary-backup.sh, paths per node; generated by fwcluster\n"
        f'echo "$(date +%s.%N) notify $1" >> {log}\n'
        'case "$1" in\n'
        "  primary)\n"
        + step("-c", "-c")
        + step("-f", "-f")
        + step("-R", "-R")
        + step("-B", "-B")
        + f'    echo "$(date +%s.%N) primary done" >> {log}\n'
        "    ;;\n"
        "  backup)\n"
        f"    if ! {c} -s >/dev/null 2>&1; then\n"
        f'      rm -f "{node.lock}"\n'
        f"      {c} -d || exit 1\n"
        "    fi\n" + step("-t", "-t") + step("-n", "-n") + "    ;;\n"
        "  fault)\n" + step("-t", "-t") + "    ;;\n"
        "  *)\n"
        '    echo "Usage: primary-backup.sh {primary|backup|fault}"\n'
        "    exit 1\n"
        "    ;;\n"
        "esac\n"
        "exit 0\n"
    )
