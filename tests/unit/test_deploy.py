"""deploy/: the systemd units pass ``systemd-analyze verify``, the filter file is the one the
testbed loads and carries the engine's marks, and the example host config is complete and valid."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from fwcluster.config import load_toml
from fwcluster.credentials import write_secret
from fwcluster.engine.engine import FAST_PATH_MARK, KERNEL_MARK
from fwcluster.hostconfig import INSTANCE_FIELDS, MASTER_FIELDS, load_instance, load_master
from fwcluster.testbed.filtering import RULES_FILE, fwcluster_rules

DEPLOY = Path(__file__).parents[2] / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))
FWCLUSTER_BIN = "/opt/fwcluster/bin/fwcluster"


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (scripts/install-system.sh installs systemd)")
    assert {u.name for u in UNITS} >= {
        "fwcluster-filter.service",
        "fwcluster-instance@.service",
        "fwcluster-master@.service",
    }
    # The units name /opt/fwcluster/bin/fwcluster, which verify wants to be executable: a stand-in.
    stub = tmp_path / "fwcluster"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS:
        text = unit.read_text()
        assert "Restart=on-failure" in text or "Type=oneshot" in text, unit.name
        name = unit.name.replace("@.service", "@x1.service")
        (units / name).write_text(text.replace(FWCLUSTER_BIN, str(stub)))
    p = subprocess.run(
        [tool, "verify", *sorted(str(u) for u in units.iterdir())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0 and not p.stderr.strip() and not p.stdout.strip(), p.stdout + p.stderr


def test_the_instance_unit_waits_for_its_filter_and_the_network() -> None:
    instance = (DEPLOY / "fwcluster-instance@.service").read_text()
    filt = (DEPLOY / "fwcluster-filter.service").read_text()

    def values(text: str, key: str) -> set[str]:
        return {v for line in re.findall(rf"^{key}=(.*)$", text, re.M) for v in line.split()}

    assert "fwcluster-filter.service" in values(instance, "Requires")
    assert {"fwcluster-filter.service", "network-online.target"} <= values(instance, "After")
    assert "network-pre.target" in values(filt, "Before") and "network-pre.target" in values(filt, "Wants")
    assert "DefaultDependencies=no" in filt and not re.search(
        r"^ExecStop", filt, re.M
    )  # stopping opens nothing
    assert "/etc/fwcluster/fwcluster.rules" in filt


def test_the_filter_file_is_the_testbeds_and_carries_the_engines_marks() -> None:
    text = (DEPLOY / "fwcluster.rules").read_text()
    assert RULES_FILE.resolve() == (DEPLOY / "fwcluster.rules").resolve()
    assert fwcluster_rules(0) == text
    assert "--queue-num 5\n" in fwcluster_rules(5) and "queue-bypass\n" not in text
    rules = [ln for ln in text.splitlines() if ln.startswith("-A ")]
    assert rules[-1] == "-A FORWARD -j NFQUEUE --queue-num 0"  # the last word: to the queue
    marks = {int(m, 16) for m in re.findall(r"--(?:or-)?mark (0x[0-9a-f]+)", text)}
    assert marks == {FAST_PATH_MARK, KERNEL_MARK}
    assert f"--and-mark 0x{0xFFFFFFFF ^ FAST_PATH_MARK:x}" in text


def test_the_example_config_lists_every_field_and_is_valid(tmp_path: Path) -> None:
    example = DEPLOY / "fwcluster.toml.example"
    data = load_toml(example)
    assert set(data["instance"]) == set(INSTANCE_FIELDS)
    assert set(data["master"]) == set(MASTER_FIELDS)
    # Adapted to this machine (its paths), as a host would install it.
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    text = example.read_text().replace("/run/fwcluster", str(run))
    for name in ("fw1.store-url", "m1.store-url", "api.token", "steering.json"):
        target = tmp_path / name
        write_secret(target, "redis://:pw@store/0" if "url" in name else "{}" if "json" in name else "x" * 32)
        text = text.replace(f"/etc/fwcluster/{name}", str(target))
    config = write_secret(tmp_path / "fwcluster.toml", text)
    cfg, inst = load_instance(config, {})
    assert inst.id == "fw1" and inst.queue == 0 and inst.metrics is not None
    assert cfg.store.sentinels and cfg.store.service == "fwc"
    _, master = load_master(config, {})
    assert master.id == "m1" and master.api is not None and master.api_token == "x" * 32


def test_the_readme_config_example_lists_every_host_field() -> None:
    readme = (DEPLOY.parent / "README.md").read_text()
    blocks = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", readme, re.S)]
    hosts = [b for b in blocks if "instance" in b]
    assert hosts, "README's config example has no [instance] section"
    assert set(hosts[0]["instance"]) == set(INSTANCE_FIELDS)
    assert set(hosts[0]["master"]) == set(MASTER_FIELDS)
    assert "denied_per_second" in hosts[0]["log"]


def test_the_instance_unit_keeps_only_the_capabilities_the_deploy_test_runs_it_with() -> None:
    # tests/deploy/test_deploy_hosts.py starts the instance under setpriv with this bounding set
    text = (DEPLOY / "fwcluster-instance@.service").read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("CapabilityBoundingSet=")]
    assert set(line.split("=", 1)[1].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    deploy_test = (Path(__file__).parents[1] / "deploy" / "test_deploy_hosts.py").read_text()
    assert '"--bounding-set=-all,+net_admin,+net_raw", "--no-new-privs"' in deploy_test
