"""Property-based: no input, however malformed, escapes as anything but located problems."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vbox_cli.envfile.load import parse
from vbox_cli.envfile.model import Envfile
from vbox_cli.errors import EnvfileError

LOCATED = re.compile(r"^Envfile:(\d+):(\d+): ")
KEYS = ["box", "provider", "cpus", "memory", "disk", "autostart", "boot_timeout", "provision", "hostname",
        "shell", "script", "file", "to", "mode", "args", "env", "run", "privileged", "machines", "defaults"]


def check(data: bytes) -> Envfile | None:
    """Either a valid Envfile, or an EnvfileError whose every problem is located inside the text."""
    try:
        return parse(data, "Envfile", Path("/nonexistent-base"))
    except EnvfileError as exc:
        assert exc.problems
        text_lines = max(1, data.count(b"\n") + 1)
        for problem in exc.problems:
            match = LOCATED.match(str(problem))
            assert match, str(problem)
            assert 1 <= problem.line <= text_lines, (problem, text_lines)
            assert problem.column >= 1
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_arbitrary_text(text):
    check(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data):
    check(data)


toml_scalars = st.one_of(
    st.text(max_size=20), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans(),
    st.floats(allow_nan=False), st.sampled_from(["512M", "1G", "lxc", "kvm", "xen", "once", "always", "/etc/x"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=10))
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, toml_values, max_size=5))
def test_arbitrary_toml_documents(document):
    check(tomli_w.dumps(document).encode())


machine_tables = st.fixed_dictionaries(
    {},
    optional={key: toml_values for key in ["box", "provider", "cpus", "memory", "disk", "hostname", "autostart",
                                             "boot_timeout"]}
    | {"provision": st.lists(st.dictionaries(st.sampled_from(KEYS), toml_values, max_size=4), max_size=3)},
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["web", "db", "Web", "a_b", "x" * 70, "9"]), machine_tables, max_size=3),
    machine_tables,
)
def test_almost_valid_envfiles(machines, defaults):
    check(tomli_w.dumps({"defaults": defaults, "machines": machines}).encode())


@settings(max_examples=15, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_cli_never_shows_a_traceback(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("prop")
    (folder / "Envfile").write_text(text, errors="replace")
    result = subprocess.run([sys.executable, "-m", "vbox_cli", "validate"], cwd=folder, capture_output=True,
                            text=True, timeout=60)
    assert "Traceback" not in result.stderr
    if result.returncode != 0:
        assert result.returncode == 2, result.stderr
        assert re.search(r"^Envfile:\d+:\d+: ", result.stderr, re.MULTILINE), result.stderr
