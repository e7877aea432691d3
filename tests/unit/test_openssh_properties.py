"""Properties of what reaches OpenSSH and libvirt: for any project folder, any recorded
user and any `host` URI, the config vbox writes is read back by OpenSSH (`ssh -G`) as
exactly what vbox meant, or vbox refuses it; a URI reaches libvirt only with allowed
parameters."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from provisioners.openssh import Endpoint, proxy_command
from vbox_cli.envfile.types import HOST_URI_PARAMETERS, host_uri_parameters
from vbox_cli.errors import VboxError

PATH_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\0/"), min_size=1, max_size=30)


def _unsafe(text: str) -> bool:
    from provisioners.openssh import unsafe_character

    return any(unsafe_character(c) or c == '"' for c in text)


def _ssh_g(config: Path, alias: str) -> dict[str, list[str]]:
    out = subprocess.run(["ssh", "-G", "-F", str(config), alias], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    found: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        found.setdefault(key, []).append(value)
    return found


def _percent_expanded(value: str) -> str:
    """What OpenSSH makes of a value with %-tokens, when the only one is "%%" (vbox writes
    no other: a lone "%" would be a token, and a mistake)."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "%":
            assert value[i + 1: i + 2] == "%", f"an unescaped % token in {value!r}"
            out.append("%")
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


@pytest.mark.skipif(not shutil.which("ssh"), reason="the OpenSSH client is part of the host set-up")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(folder=PATH_TEXT, user=st.text(max_size=12))
@example(folder="%", user="")  # found by a fresh host's run: ssh -G shows IdentityFile unexpanded
@example(folder="a%hb %%", user="")
def test_a_config_block_means_what_vbox_meant_or_is_refused(tmp_path, folder, user):
    base = f"/srv/{folder}/.vbox"
    endpoint = Endpoint(alias="vbox-demo-abc123-web", name="web.demo-abc123.vbox", address="10.101.7.2", port=22, user=user or "vbox",
                        key=f"{base}/id_ed25519", known_hosts=f"{base}/known_hosts")
    try:
        block = endpoint.config_block()
    except VboxError:
        # a refusal is fine, but a folder without control characters or double quotes must pass
        assert _unsafe(folder) or user, (folder, user)
        return
    assert len(block.split("\n")) == 10 and block.endswith("\n")  # nothing added a line (OpenSSH splits on \n)
    assert not any(c in block for c in "\r\x85\u2028\u2029")
    config = tmp_path / "config"
    config.write_text(block)
    seen = _ssh_g(config, "vbox-demo-abc123-web")
    assert seen["hostname"] == ["10.101.7.2"] and seen["user"] == [user or "vbox"]
    # `ssh -G` shows IdentityFile before its %-tokens are expanded (ssh expands them when it
    # loads the key): "%%" there is the "%" that ssh will use
    assert [_percent_expanded(v) for v in seen["identityfile"]] == [f"{base}/id_ed25519"]
    assert seen["userknownhostsfile"] == [f"{base}/known_hosts"]
    assert seen["stricthostkeychecking"] == ["true"] and "proxycommand" not in seen


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from([*HOST_URI_PARAMETERS, "command", "socket", "netcat", "pkipath",
                                                 "no_verify", "known_hosts_verify", "name", "x"]),
                                st.text(max_size=20)), max_size=4))
def test_a_host_uri_reaches_libvirt_only_with_allowed_parameters(pairs):
    from urllib.parse import urlencode

    uri = "qemu+ssh://user@server/system?" + urlencode(pairs)
    try:
        accepted = host_uri_parameters(uri)
    except ValueError:
        return
    names = [name for name, _ in accepted]
    assert set(names) <= set(HOST_URI_PARAMETERS) and len(names) == len(set(names))
    for name, value in accepted:
        assert not any(ord(c) < 32 for c in value)
        if HOST_URI_PARAMETERS[name] is None:
            assert value and not value.startswith(("/", "~"))
    assert dict(parse_qsl(urlsplit(uri).query, keep_blank_values=True)) == dict(accepted)


@given(name=PATH_TEXT)
@settings(max_examples=100, deadline=None)
def test_a_proxy_command_keeps_every_path_one_argument(name):
    import shlex

    project = SimpleNamespace(client_key=Path(f"/p/{name}/.vbox/id_ed25519"), known_hosts=Path(f"/p/{name}/kh"))
    access = SimpleNamespace(remote=True, machine="xenhost", ssh_user="vbox", ssh_port=22, ssh_host="10.1.2.3")
    try:
        command = proxy_command(project, access)
    except VboxError:
        assert _unsafe(name)
        return
    argv = shlex.split(command)
    assert argv[argv.index("-i") + 1] == str(project.client_key).replace("%", "%%")
    assert argv[-4:] == ["-W", "%h:%p", "--", "10.1.2.3"]
