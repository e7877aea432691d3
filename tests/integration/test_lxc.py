"""LXC machines for real: containers, the project network, SSH into them, and no trace after destroy."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from providers.leaks import find as find_leaks
from tests.integration.conftest import VBOX
from vbox_cli.project import project_id
from vbox_cli.sshkeys import new_ed25519

TWO_MACHINES = """
[defaults]
box = "debian-12"
memory = "256M"

[machines.web]
cpus = 1
provision = [
  { file = "files/site.conf", to = "/etc/site/site.conf", mode = "0640" },
  { script = "files/setup.sh", args = ["--name", "two words"], env = { GREETING = "hello" } },
  { shell = "id -un > /tmp/whoami", privileged = false },
  { shell = "echo once >> /root/once.log" },
  { shell = "echo always >> /root/always.log", run = "always" },
]

[machines.db]
memory = "384M"
provision = [{ shell = "echo db > /etc/motd" }]
"""


class Project:
    def __init__(self, folder: Path):
        self.folder = folder
        self.id = project_id(folder)

    def write(self, envfile: str) -> None:
        (self.folder / "Envfile").write_text(textwrap.dedent(envfile))

    def env(self, *args, check_rc: int | None = 0, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run([str(VBOX), "--plain", *args], cwd=self.folder, capture_output=True, text=True,
                                timeout=timeout)
        assert "Traceback" not in result.stderr, result.stderr
        if check_rc is not None:
            assert result.returncode == check_rc, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    def ssh(self, machine: str, command: str) -> str:
        return self.env("ssh", machine, "--", command).stdout

    def kill_up_after(self, seconds: float) -> None:
        """Start `env up` and SIGKILL it after that long."""
        process = subprocess.Popen([str(VBOX), "--plain", "up"], cwd=self.folder, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(seconds)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def status(self) -> dict:
        return {m["name"]: m for m in json.loads(self.env("status", "--json").stdout)["machines"]}


@pytest.fixture
def project(debian12, tmp_path):
    folder = tmp_path / "proj"
    (folder / "files").mkdir(parents=True)
    (folder / "files" / "site.conf").write_text("listen 8080;\n")
    (folder / "files" / "setup.sh").write_text('#!/bin/sh\necho "$GREETING: $1=$2" > /root/setup.out\n')
    p = Project(folder)
    p.write(TWO_MACHINES)
    yield p
    if (folder / "Envfile").exists():
        p.env("destroy", "-f", check_rc=None)
    leaks = find_leaks(p.id)
    assert leaks == [], f"left behind: {leaks}"
    assert not (folder / ".vbox").exists()


def test_up_provisions_two_machines_reachable_by_ssh_and_by_name(project):
    result = project.env("up")
    assert "web" in result.stdout and "db" in result.stdout
    # provisioning output streams with the machine's name
    status = project.status()
    assert {m: s["state"] for m, s in status.items()} == {"web": "running", "db": "running"}
    assert status["web"]["box_digest"].startswith("sha256:")
    web, db = status["web"]["address"], status["db"]["address"]
    # the file step: content, mode and owner
    assert project.ssh("web", "sudo cat /etc/site/site.conf") == "listen 8080;\n"
    assert project.ssh("web", "stat -c '%a %U' /etc/site/site.conf") == "640 root\n"
    # the script step: arguments and environment
    assert project.ssh("web", "sudo cat /root/setup.out") == "hello: --name=two words\n"
    assert project.ssh("web", "cat /tmp/whoami") == "vbox\n"
    # machines reach each other by name on the project network
    assert project.ssh("db", "getent ahostsv4 web | head -1").split()[0] == web
    assert project.ssh("web", "ping -c 1 -W 5 db >/dev/null && echo ok") == "ok\n"
    # ... through the project network's DNS, without systemd-resolved (not on its boot's way)
    gateway = web.rsplit(".", 1)[0] + ".1"
    assert f"nameserver {gateway}\n" in project.ssh("web", "cat /etc/resolv.conf")
    assert project.ssh("web", "systemctl is-enabled systemd-resolved || true") == "masked\n"
    assert project.ssh("web", f"getent ahostsv4 db.{project.id}.vbox | head -1").split()[0] == db
    assert project.ssh("web", "hostname") == "web\n"
    assert db != web
    # limits from the Envfile, seen inside through lxcfs
    assert project.ssh("web", "nproc") == "1\n"
    assert project.ssh("db", "free -m | awk '/^Mem:/ {print $2}'") == "384\n"
    # lxcfs's mount hook, not its post-stop hook (a 0.5 s sleep at every stop)
    hooks = {key: subprocess.run(["lxc-info", "-P", "/var/lib/vbox/lxc", "-n", f"vbox-{project.id}-web", "-c",
                                  f"lxc.hook.{key}"], capture_output=True, text=True, check=True).stdout.strip()
             for key in ("mount", "post-stop")}
    assert hooks == {"mount": "lxc.hook.mount = /usr/share/lxcfs/lxc.mount.hook", "post-stop": "lxc.hook.post-stop ="}
    # a command's exit status passes through env ssh
    assert project.env("ssh", "web", "--", "sh", "-c", "exit 7", check_rc=None).returncode == 7


def test_env_ssh_shares_one_connection_per_machine_until_it_halts(project):
    """The first `env ssh` starts a master connection; the next ones go through it (the
    same TCP connection: the same client port seen by sshd) by the fast path, which
    loads no more of vbox than vbox_cli.sshmux; halt and destroy end the master."""
    import sys

    from vbox_cli import sshmux

    project.env("up", "web")
    first = project.ssh("web", "echo $SSH_CONNECTION")
    socket = sshmux.control_path(project.id, "web")
    assert socket and os.path.exists(socket)
    fast = subprocess.run([sys.executable, "-X", "importtime", str(VBOX), "--plain", "ssh", "web", "--",
                           "echo $SSH_CONNECTION"], cwd=project.folder, capture_output=True, text=True, timeout=60)
    assert fast.returncode == 0, fast.stderr
    assert fast.stdout == first  # one connection: the same client address and port
    loaded = {line.split("|")[-1].strip() for line in fast.stderr.splitlines() if line.startswith("import time:")}
    assert "vbox_cli.sshmux" in loaded and not {"typer", "pydantic", "libvirt", "vbox_cli.app"} & loaded
    # a changed Envfile: the whole way again (it checks the machine), the same connection
    project.write(TWO_MACHINES + "\n")
    assert project.ssh("web", "echo $SSH_CONNECTION") == first
    # the command's exit status comes through the master
    assert project.env("ssh", "web", "--", "exit 3", check_rc=None).returncode == 3
    project.env("halt", "web")
    assert not os.path.exists(socket) and sshmux.leaks(project.id) == []
    assert "is not running" in project.env("ssh", "web", "--", "true", check_rc=1).stderr
    project.env("up", "web")
    assert project.ssh("web", "echo $SSH_CONNECTION") != first  # a new machine boot, a new connection
    assert os.path.exists(socket)
    project.env("destroy", "-f")
    assert not os.path.exists(socket) and sshmux.leaks(project.id) == []


def test_ssh_config_works_with_openssh_and_checks_the_host_key(project, tmp_path):
    project.env("up", "web")
    config = tmp_path / "ssh_config"
    config.write_text(project.env("ssh-config", "web").stdout)
    alias = f"vbox-{project.id}-web"
    ran = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", alias, "true"], capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    known = project.env("ssh-config", "--known-hosts", "web").stdout
    assert known.startswith(f"{alias},") and "ssh-ed25519" in known
    # a machine presenting another host key is refused
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{alias} {new_ed25519('another machine')[1]}\n")
    refused = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o",
                              f"UserKnownHostsFile={wrong}", alias, "true"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "HOST IDENTIFICATION HAS CHANGED" in refused.stderr or "verification failed" in refused.stderr


def test_vbox_refuses_a_machine_with_another_host_key(project):
    project.env("up", "db")
    state_file = project.folder / ".vbox" / "state.json"
    state = json.loads(state_file.read_text())
    state["machines"]["db"]["host_key"] = new_ed25519("another machine")[1]
    state_file.write_text(json.dumps(state))
    result = project.env("provision", "db", "--force", check_rc=1)
    assert "host key is not the one vbox made" in result.stderr


def test_up_is_idempotent_and_halt_up_keeps_data_without_reprovisioning(project):
    project.env("up")
    again = project.env("up")
    assert "nothing to do" in again.stdout.split("db", 2)[-1]  # db has no run=always step
    project.ssh("web", "echo keep-me > /home/vbox/data.txt")
    project.env("halt")
    assert {s["state"] for s in project.status().values()} == {"stopped"}
    project.env("up")
    assert project.ssh("web", "cat /home/vbox/data.txt") == "keep-me\n"
    assert project.ssh("web", "sudo cat /root/once.log") == "once\n"
    assert project.ssh("web", "sudo cat /root/always.log").count("always") == 3


def test_provision_reruns_always_steps_and_once_steps_only_with_force(project):
    project.env("up", "web")
    project.env("provision", "web")
    assert project.ssh("web", "sudo cat /root/once.log") == "once\n"
    project.env("provision", "web", "--force")
    assert project.ssh("web", "sudo cat /root/once.log") == "once\nonce\n"


def test_reload_applies_a_memory_change(project):
    project.env("up", "db")
    assert project.ssh("db", "free -m | awk '/^Mem:/ {print $2}'") == "384\n"
    project.write(TWO_MACHINES.replace('memory = "384M"', 'memory = "512M"'))
    project.env("reload", "db")
    assert project.ssh("db", "free -m | awk '/^Mem:/ {print $2}'") == "512\n"


def test_a_failing_step_names_machine_step_and_status_and_others_finish(project):
    project.write(TWO_MACHINES.replace('{ shell = "echo db > /etc/motd" }',
                                       '{ shell = "echo first" }, { shell = "echo about to fail\\nexit 3" }'))
    result = project.env("up", check_rc=1)
    assert "db: provisioning step 2 (shell: echo about to fail) failed with exit status 3" in result.stderr
    assert re.search(r"^db +\| about to fail$", result.stdout, re.MULTILINE), result.stdout
    status = project.status()
    assert status["db"]["state"] == "running"  # left up for debugging
    assert project.ssh("web", "sudo cat /root/once.log") == "once\n"  # the other machine finished
    # once the step is fixed, the next up runs what has not run yet
    project.write(TWO_MACHINES)
    project.env("up")
    assert project.ssh("db", "cat /etc/motd") == "db\n"


def test_a_machine_deleted_behind_vbox_is_not_created_and_up_makes_it_again(project):
    project.env("up", "db")
    folder = Path("/var/lib/vbox/lxc") / f"vbox-{project.id}-db"
    subprocess.run(["lxc-stop", "-P", "/var/lib/vbox/lxc", "-n", folder.name, "-k"], check=True)
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    assert project.status()["db"]["state"] == "not created"
    project.env("up", "db")
    assert project.status()["db"]["state"] == "running"
    assert project.ssh("db", "cat /etc/motd") == "db\n"  # provisioned again: a new machine


def test_a_machine_dropped_from_the_envfile_is_reported_and_destroyed(project):
    project.env("up")
    project.write(TWO_MACHINES.split("[machines.db]")[0])
    status = project.status()
    assert status["db"]["state"] == "running (not in the Envfile)"
    project.env("destroy", "-f")
    assert find_leaks(project.id) == []


def test_a_machine_whose_provider_changed_is_not_made_twice_and_destroy_removes_it(project):
    import libvirt

    project.write("[machines.web]\n")
    project.env("up")
    project.ssh("web", "sudo touch /root/kept")
    project.write('[machines.web]\nprovider = "kvm"\nfolders = []\n')
    refused = project.env("up", check_rc=1)
    assert "web was made by the lxc provider, and the Envfile now says kvm: nothing was done" in refused.stderr
    assert "`env destroy web` removes the lxc machine" in refused.stderr
    obj = f"vbox-{project.id}-web"
    conn = libvirt.open("qemu:///system")
    try:
        assert obj not in [dom.name() for dom in conn.listAllDomains()]  # no second machine, on the same address
    finally:
        conn.close()
    status = project.status()["web"]
    assert status["drift"] == ["provider lxc -> kvm: `env destroy web` and `env up web`"]
    lxc = ["lxc-info", "-P", "/var/lib/vbox/lxc", "-n", obj, "-sH"]
    assert subprocess.run(lxc, capture_output=True, text=True).stdout.strip() == "RUNNING"
    project.write("[machines.web]\n")  # back: the machine is as it was
    project.env("up")
    project.ssh("web", "sudo test -f /root/kept")
    project.write('[machines.web]\nprovider = "kvm"\nfolders = []\n')
    project.env("destroy", "-f", "web")  # through the provider that made it
    assert not (Path("/var/lib/vbox/lxc") / obj).exists()
    assert project.status()["web"]["state"] == "not created"


def test_missing_box_says_how_to_get_it_and_makes_nothing(project):
    project.write('[machines.web]\nbox = "no-such-box"\n')
    result = project.env("up", check_rc=1)
    assert "no box named 'no-such-box'" in result.stderr and "env box build no-such-box" in result.stderr
    assert find_leaks(project.id) == []


def test_concurrent_up_in_one_project_waits_for_the_lock(project):
    first = subprocess.Popen([str(VBOX), "--plain", "up"], cwd=project.folder, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    second = project.env("up")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert "another env command is running in this project; waiting" in second.stdout
    assert {s["state"] for s in project.status().values()} == {"running"}
    assert project.ssh("web", "sudo cat /root/once.log") == "once\n"


@pytest.mark.parametrize("delay,then", [(0.3, "up"), (0.8, "up"), (1.5, "up"), (0.5, "destroy"), (1.2, "destroy"),
                                        (2.5, "destroy")])
def test_killed_up_then_up_or_destroy(project, delay, then):
    project.kill_up_after(delay)
    if then == "up":
        project.env("up")
        assert {s["state"] for s in project.status().values()} == {"running"}
        assert project.ssh("web", "sudo cat /etc/site/site.conf") == "listen 8080;\n"
        assert project.ssh("db", "cat /etc/motd") == "db\n"
    else:
        project.env("destroy", "-f")
        assert find_leaks(project.id) == []


def test_destroy_of_one_machine_keeps_the_others(project):
    project.env("up")
    project.env("destroy", "-f", "db")
    status = project.status()
    assert status["db"]["state"] == "not created" and status["web"]["state"] == "running"
    assert [leak for leak in find_leaks(project.id) if f"{project.id}-db" in leak] == []


def test_boot_timeout_shows_the_console_tail(project):
    project.write('[machines.web]\nboot_timeout = 5\nprovision = [{ shell = "true", run = "always" }]\n')
    project.env("up")
    project.ssh("web", "sudo systemctl mask --quiet ssh.service")
    project.env("halt")
    result = project.env("up", check_rc=1)
    # one line saying what failed, where the console log is; its tail with --verbose
    assert "error: web: SSH did not answer within 5 s" in result.stderr
    assert "hint: raise boot_timeout" in result.stderr and "its console log: " in result.stderr
    assert "--verbose shows the details" in result.stderr and "last lines of the console" not in result.stderr
    result = project.env("--verbose", "up", check_rc=1)
    assert "last lines of the console" in result.stderr
    assert "Reached target" in result.stderr or "Started" in result.stderr  # the console's own lines


def test_the_box_boots_sshd_with_the_machines_key_and_makes_keys_where_none_is(project):
    """A machine vbox made has its host key: the box's key service is skipped by systemd's
    condition, nothing runs before sshd, and no unit failed (the units the box masks are
    not missed). A box used without vbox has no key: sshd's start makes them all."""
    project.write("[machines.web]\n")
    project.env("up")
    assert project.ssh("web", "systemctl show -p ConditionResult -p ExecMainStatus vbox-host-keys.service") == \
        "ExecMainStatus=0\nConditionResult=no\n"
    assert project.ssh("web", "systemctl show -p ExecStartPre --value ssh.service") == ""
    assert project.ssh("web", "systemctl is-system-running || systemctl --failed --no-legend") == "running\n"
    made = project.ssh("web", "sudo sh -c 'rm /etc/ssh/ssh_host_*; systemctl restart ssh.service; "
                              "cd /etc/ssh && ls ssh_host_*_key'")
    assert made.split() == ["ssh_host_ecdsa_key", "ssh_host_ed25519_key", "ssh_host_rsa_key"]
