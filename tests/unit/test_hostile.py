"""Hostile projects: a repository the user did not write, run through every read verb and
through `up` and `destroy` (as root here, as vbox often runs). Nothing in the project may
run a program, read or write a file outside it, or touch another project. Each case is
a project folder with an Envfile and files (symlinks included); a canary folder outside
holds files that must stay as they were, and a marker program that must never run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

VBOX = Path(sys.executable).parent / "vbox"
VERBS = [("validate",), ("status",), ("status", "--json"), ("ssh-config",), ("up",), ("destroy", "-f")]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry below `folder` (links not followed): kind, mode, content digest, mtime."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            info = os.lstat(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
            found[str(path.relative_to(folder))] = (info.st_mode, digest, info.st_mtime_ns,
                                                    os.readlink(path) if path.is_symlink() else "")
    return found


@pytest.fixture
def canary(tmp_path):
    folder = tmp_path / "canary"
    folder.mkdir()
    (folder / "secret").write_text("the canary's secret\n")
    (folder / "shadow").write_text("root:$6$x:19000:0:99999:7:::\n")
    marker = tmp_path / "MARKER"
    pwn = folder / "pwn.sh"
    pwn.write_text(f"#!/bin/sh\ntouch {marker}\n")
    pwn.chmod(0o755)
    sibling = tmp_path / "sibling-project"
    sibling.mkdir()
    (sibling / "Envfile").write_text("[machines.web]\n")
    (sibling / "data").write_text("the sibling's data\n")
    return {"folder": folder, "marker": marker, "pwn": pwn, "sibling": sibling}


def _project(tmp_path: Path, envfile: str = "[machines.web]\n") -> Path:
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "Envfile").write_text(envfile)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return folder


def build(case: str, tmp_path: Path, canary: dict) -> Path:
    outside = canary["folder"]
    if case == "uri-command":
        folder = _project(tmp_path, '[machines.vm]\nprovider = "kvm"\nhost = "qemu+ssh://x/system?command=./pwn.sh"\n')
        (folder / "pwn.sh").write_text(canary["pwn"].read_text())
        (folder / "pwn.sh").chmod(0o755)
    elif case == "uri-command-in-defaults":
        folder = _project(tmp_path, f'[defaults]\nprovider = "xen"\nhost = "xen+ssh://x/system?command={canary["pwn"]}"'
                                    '\n[machines.vm]\n')
    elif case == "uri-keyfile-outside":
        folder = _project(tmp_path, f'[machines.vm]\nprovider = "kvm"\n'
                                    f'host = "qemu+libssh2://x/system?keyfile={outside}/secret"\n')
    elif case == "vbox-links-to-parent":
        folder = _project(tmp_path)
        (folder / ".vbox").symlink_to("..")
    elif case == "vbox-links-outside":
        folder = _project(tmp_path)
        (folder / ".vbox").symlink_to(outside)
    elif case == "vbox-is-a-file":
        folder = _project(tmp_path)
        (folder / ".vbox").write_text("not a folder\n")
    elif case == "links-inside-vbox":
        folder = _project(tmp_path)
        (folder / ".vbox").mkdir()
        for name, target in (("known_hosts", outside / "secret"), ("id_ed25519.pub", outside / "secret"),
                             ("lock", outside / "secret"), ("console", outside), ("id_ed25519.tmp", outside / "shadow")):
            (folder / ".vbox" / name).symlink_to(target)
    elif case == "state-links-outside":
        folder = _project(tmp_path)
        (folder / ".vbox").mkdir()
        (folder / ".vbox" / "state.json").symlink_to(outside / "secret")
    elif case == "state-injects-ssh-options":
        folder = _project(tmp_path)
        (folder / ".vbox").mkdir()
        (folder / ".vbox" / "state.json").write_text(
            '{"machines": {"web": {"address": "-oProxyCommand=%s", "host_key": "ssh-ed25519 AAAA", "port": 22,'
            ' "user": "vbox\\nProxyCommand %s"}}}' % (canary["pwn"], canary["pwn"]))
    elif case == "file-step-absolute":
        folder = _project(tmp_path, '[machines.web]\nprovision = [{ file = "/etc/shadow", to = "/tmp/x" }]\n')
    elif case == "file-step-dotdot":
        folder = _project(tmp_path, '[machines.web]\nprovision = [{ file = "../canary/secret", to = "/tmp/x" }]\n')
    elif case == "file-step-through-a-link":
        folder = _project(tmp_path, '[machines.web]\nprovision = [{ file = "conf/secret", to = "/tmp/x" }]\n')
        (folder / "conf").symlink_to(outside)
    elif case == "script-is-a-link-out":
        folder = _project(tmp_path, '[machines.web]\nprovision = [{ script = "setup.sh" }]\n')
        (folder / "setup.sh").symlink_to(canary["pwn"])
    elif case == "envfile-links-outside":
        folder = tmp_path / "hostile"
        folder.mkdir()
        (outside / "Envfile").write_text("[machines.web]\n")
        (folder / "Envfile").symlink_to(outside / "Envfile")
    elif case == "envfile-is-a-fifo":
        folder = tmp_path / "hostile"
        folder.mkdir()
        os.mkfifo(folder / "Envfile")
    elif case == "folder-through-a-link":
        folder = _project(tmp_path, '[machines.web]\nfolders = [{ host = "data", guest = "/data" }]\n')
        (folder / "data").symlink_to(outside)
    elif case == "folder-is-the-parent":
        folder = _project(tmp_path, '[defaults]\nfolders = [{ host = "..", guest = "/up" }]\n[machines.web]\n')
    elif case == "port-smuggles-arguments":
        folder = _project(tmp_path, '[machines.web]\nports = [{ host = 8080, guest = 80, '
                                    'address = "127.0.0.1 -j ACCEPT" }]\n')
    elif case == "box-url-reads-a-host-file":
        folder = _project(tmp_path, f'[defaults]\nbox_url = "file://{canary["folder"] / "secret"}"\n[machines.web]\n')
    elif case == "box-url-through-a-link":
        folder = _project(tmp_path, '[defaults]\nbox = "x"\nbox_url = "boxes/x.json"\n[machines.web]\n')
        (folder / "boxes").symlink_to(outside)
    elif case == "box-url-runs-a-program":
        folder = _project(tmp_path, f'[defaults]\nbox_url = "ssh://host/{canary["pwn"]}"\n[machines.web]\n')
    elif case == "box-version-smuggles":
        folder = _project(tmp_path, '[defaults]\nbox_version = "12; rm -rf /"\n[machines.web]\n')
    elif case == "network-bridge-smuggles":
        folder = _project(tmp_path, '[machines.web]\nnetworks = [{ ovs = "br0 -- del-br x" }]\n')
    elif case == "network-bridge-newline":
        folder = _project(tmp_path, '[machines.web]\nnetworks = [{ bridge = "br0\\nlxc.hook.pre-start = /x" }]\n')
    elif case == "folder-guest-newline":
        folder = _project(tmp_path, '[machines.web]\nfolders = [{ host = ".", guest = "/a\\nvbox.folder=vbox9" }]\n')
    elif case == "envfile-is-dev-zero":
        folder = _project(tmp_path)
    elif case == "lock-links-outside":  # an Envfile.lock that is a link to a host file
        folder = _project(tmp_path)
        (folder / "Envfile.lock").symlink_to(canary["folder"] / "secret")
    elif case == "host-trigger-not-accepted":  # host commands run only once accepted, never by themselves
        folder = _project(tmp_path, f'[machines.web]\ntriggers = [{{ before = "up", run = "{canary["pwn"]}" }}, '
                                    f'{{ before = "destroy", run = "{canary["pwn"]}" }}]\n')
    elif case == "host-trigger-approval-planted":  # the project carries an "approval": it counts for nothing
        import hashlib as _h

        command = str(canary["pwn"])
        folder = _project(tmp_path, f'[machines.web]\ntriggers = [{{ before = "up", run = "{command}" }}]\n')
        fingerprint = _h.sha256(f"before up\0{command}".encode()).hexdigest()
        (folder / ".vbox").mkdir()
        (folder / ".vbox" / "approved-triggers.json").write_text(
            '{"%s\\u0000%d": ["%s"]}' % (folder.resolve(), os.getuid(), fingerprint))
        (folder / "approved-triggers.json").write_text((folder / ".vbox" / "approved-triggers.json").read_text())
    elif case == "ansible-runs-a-local-command":  # a playbook runs code on this host: only once accepted
        folder = _project(tmp_path, '[machines.web]\nprovision = [{ ansible = "site.yml" }]\n')
        (folder / "site.yml").write_text(f"- hosts: localhost\n  connection: local\n  tasks:\n"
                                         f"    - command: {canary['pwn']}\n")
        (folder / "ansible.cfg").write_text(f"[defaults]\nvault_password_file = {canary['pwn']}\n")
    elif case == "ansible-playbook-outside":  # a playbook path leading out of the project
        folder = _project(tmp_path, '[machines.web]\nprovision = [{ ansible = "../canary/secret" }]\n')
    elif case == "trigger-run-in-smuggles":
        folder = _project(tmp_path, f'[machines.web]\ntriggers = [{{ after = "up", run_in = "web; {canary["pwn"]}", '
                                    'shell = "true" }]\n')
    elif case == "unprivileged-smuggles-config":  # a value that would be a line of LXC's config
        folder = _project(tmp_path, '[machines.web]\nunprivileged = "true\\nlxc.hook.pre-start = %s"\n'
                          % canary["pwn"])
    elif case == "a-plain-project":  # the control: the harness itself runs every verb
        folder = _project(tmp_path)
    else:
        raise AssertionError(case)
    return folder


CASES = ["uri-command", "uri-command-in-defaults", "uri-keyfile-outside", "vbox-links-to-parent",
         "vbox-links-outside", "vbox-is-a-file", "links-inside-vbox", "state-links-outside",
         "state-injects-ssh-options", "file-step-absolute", "file-step-dotdot", "file-step-through-a-link",
         "script-is-a-link-out", "envfile-links-outside", "envfile-is-a-fifo", "envfile-is-dev-zero",
         "folder-through-a-link", "folder-is-the-parent", "port-smuggles-arguments",
         "box-url-reads-a-host-file", "box-url-through-a-link", "box-url-runs-a-program", "box-version-smuggles",
         "network-bridge-smuggles", "network-bridge-newline", "folder-guest-newline", "lock-links-outside",
         "host-trigger-not-accepted", "host-trigger-approval-planted", "trigger-run-in-smuggles",
         "ansible-runs-a-local-command", "ansible-playbook-outside", "unprivileged-smuggles-config",
         "a-plain-project"]
EXTRA_VERBS = {"lock-links-outside": [("up", "--locked"), ("lock",)]}
GLOBAL_ARGS = {"envfile-is-a-fifo": ["--file", "Envfile"], "envfile-is-dev-zero": ["--file", "/dev/zero"]}


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_project_harms_nothing_outside_it(tmp_path, canary, case):
    folder = build(case, tmp_path, canary)
    before = snapshot(tmp_path / "canary"), snapshot(canary["sibling"])
    git_before = snapshot(folder / ".git") if (folder / ".git").is_dir() else None
    env = {**os.environ, "VBOX_HOME": str(tmp_path / "home"), "VBOX_CACHE": str(tmp_path / "cache")}
    for verb in VERBS + EXTRA_VERBS.get(case, []):
        result = subprocess.run([str(VBOX), "--plain", *GLOBAL_ARGS.get(case, []), *verb], cwd=folder, env=env, capture_output=True, text=True,
                                timeout=120, stdin=subprocess.DEVNULL)
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr, (verb, result.stderr)
        assert not canary["marker"].exists(), f"{case}: `{' '.join(verb)}` ran the project's program"
        assert (snapshot(tmp_path / "canary"), snapshot(canary["sibling"])) == before, \
            f"{case}: `{' '.join(verb)}` changed a file outside the project"
        if git_before is not None:
            assert snapshot(folder / ".git") == git_before, f"{case}: `{' '.join(verb)}` touched .git"
        assert "the canary's secret" not in result.stdout + result.stderr, f"{case}: {verb} showed a file outside"
        assert "ProxyCommand " + str(canary["pwn"]) not in result.stdout, f"{case}: {verb} wrote an injected option"
        refusal = REFUSED_BY.get(case)
        if refusal and (verb[0] in refusal[0] or " ".join(verb) in refusal[0]):
            assert result.returncode != 0 and refusal[1] in result.stderr, \
                f"{case}: `{' '.join(verb)}` did not refuse it with {refusal[1]!r}\n{result.stdout}{result.stderr}"


# case -> (the verbs that must refuse it, a fragment of the message); the others must
# harm nothing, whatever they answer
ENVFILE_VERBS = ("validate", "status", "up", "ssh-config", "destroy")
VBOX_VERBS = ("status", "up", "destroy")
REFUSED_BY = {
    "host-trigger-not-accepted": (("up", "destroy"), "not accepted here"),
    "host-trigger-approval-planted": (("up",), "not accepted here"),
    "trigger-run-in-smuggles": (ENVFILE_VERBS, "no machine 'web; "),
    "ansible-runs-a-local-command": (("up",), "not accepted here"),
    "ansible-playbook-outside": (ENVFILE_VERBS, "outside"),
    "unprivileged-smuggles-config": (ENVFILE_VERBS, "unprivileged: must be true or false"),
    "uri-command": (ENVFILE_VERBS, "URI parameter 'command' is not allowed"),
    "uri-command-in-defaults": (ENVFILE_VERBS, "URI parameter 'command' is not allowed"),
    "uri-keyfile-outside": (ENVFILE_VERBS, "must name a file of the project"),
    "vbox-links-to-parent": (VBOX_VERBS, ".vbox is a symlink"),
    "vbox-links-outside": (VBOX_VERBS, ".vbox is a symlink"),
    "vbox-is-a-file": (VBOX_VERBS, ".vbox is not a folder"),
    "state-links-outside": (VBOX_VERBS, "state.json cannot be read"),
    "state-injects-ssh-options": (("ssh-config",), "is not an IP address"),
    "file-step-absolute": (ENVFILE_VERBS, "is an absolute path"),
    "file-step-dotdot": (ENVFILE_VERBS, "leads outside the project folder"),
    "file-step-through-a-link": (ENVFILE_VERBS, "leads outside the project folder"),
    "script-is-a-link-out": (ENVFILE_VERBS, "leads outside the project folder"),
    "envfile-links-outside": (ENVFILE_VERBS, "outside the project folder; vbox will not read it"),
    "lock-links-outside": (("up --locked",), "(a link, or not a regular file?)"),
    "envfile-is-a-fifo": (ENVFILE_VERBS, "is not a regular file"),
    "envfile-is-dev-zero": (ENVFILE_VERBS, "is not a regular file"),
    "folder-through-a-link": (ENVFILE_VERBS, "leads outside the project folder"),
    "folder-is-the-parent": (ENVFILE_VERBS, "leads outside the project folder"),
    "port-smuggles-arguments": (ENVFILE_VERBS, "is not an IPv4 address of this host"),
    "box-url-reads-a-host-file": (ENVFILE_VERBS, "leads outside the project folder"),
    "box-url-through-a-link": (ENVFILE_VERBS, "leads outside the project folder"),
    "box-url-runs-a-program": (ENVFILE_VERBS, "vbox fetches boxes over http, https or from files"),
    "box-version-smuggles": (ENVFILE_VERBS, "is not a version"),
    "network-bridge-smuggles": (ENVFILE_VERBS, "not a network interface name"),
    "network-bridge-newline": (ENVFILE_VERBS, "not a network interface name"),
    "folder-guest-newline": (ENVFILE_VERBS, "must not contain control characters"),
}
