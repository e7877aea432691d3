"""The Envfile: the model, the located errors, the corpus of malformed files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vbox_cli.envfile.load import load, parse
from vbox_cli.envfile.model import (
    GIB,
    MIB,
    FileStep,
    ScriptStep,
    ShellStep,
    format_size,
    parse_size,
)
from vbox_cli.errors import EnvfileError

HERE = Path(__file__).parent
CORPUS = sorted((HERE / "envfiles").glob("*.toml"))
REPO = HERE.parent.parent
EXPECT = re.compile(rb"^# expect (\d+) (\S+) \| (.*)$", re.MULTILINE)
LOCATED = re.compile(r"^[^:]+:\d+:\d+: ")


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_malformed_envfile_reports_every_expected_problem(path: Path):
    expectations = [(int(line), path_.decode(), text.decode()) for line, path_, text in EXPECT.findall(path.read_bytes())]
    assert expectations, f"{path.name} states no expectation"
    with pytest.raises(EnvfileError) as info:
        load(path)
    problems = info.value.problems
    for problem in problems:
        assert LOCATED.match(str(problem)), str(problem)
        assert problem.file == path.name or problem.file.endswith(path.name)
    for line, dotted, fragment in expectations:
        wanted = "" if dotted == "-" else dotted
        matching = [p for p in problems if p.path == wanted and fragment in f"{p.message} {p.hint or ''}"]
        assert matching, f"no problem at {dotted} containing {fragment!r}; got:\n{info.value}"
        assert matching[0].line == line, f"{dotted}: line {matching[0].line}, expected {line}"
    assert len(problems) == len(expectations), f"unexpected extra problems:\n{info.value}"


def test_example_envfile_is_valid_and_shows_every_key():
    loaded = load(REPO / "Envfile.example")
    assert len(loaded.machines) >= 2
    text = (REPO / "Envfile.example").read_text()
    from vbox_cli.envfile.model import (
        Defaults,
        FileStep,
        MachineSpec,
        ScriptStep,
        ShellStep,
    )

    keys = {*Defaults.model_fields, *MachineSpec.model_fields, *ShellStep.model_fields,
            *ScriptStep.model_fields, *FileStep.model_fields}
    missing = [k for k in keys if not re.search(rf"\b{k}\b\s*=", text)]
    assert not missing, f"Envfile.example does not show: {missing}"


def test_init_template_is_valid():
    template = REPO / "vbox_cli" / "templates" / "Envfile.init"
    envfile = parse(template.read_bytes(), "Envfile", template.parent)
    assert set(envfile.machines) == {"web", "db"}


def test_defaults_are_inherited_and_overridden(tmp_path: Path):
    (tmp_path / "setup.sh").write_text("echo hi\n")
    envfile = tmp_path / "Envfile"
    envfile.write_text(
        """
[defaults]
provider = "kvm"
memory = "1G"
provision = [{ shell = "echo default" }]

[machines.web]
memory = "2G"
hostname = "web.example.test"

[machines.db]
cpus = 2
provision = [
  { script = "setup.sh", args = ["--init"], env = { MODE = "x" }, run = "always" },
  { file = "setup.sh", to = "/opt/setup.sh", mode = "0755", privileged = false },
]
"""
    )
    machines = load(envfile).machines
    web, db = machines["web"], machines["db"]
    assert (web.provider, web.memory, web.cpus, web.hostname) == ("kvm", 2 * GIB, 1, "web.example.test")
    assert web.provision == (ShellStep(shell="echo default"),)
    assert (db.provider, db.memory, db.cpus, db.hostname, db.box) == ("kvm", GIB, 2, "db", "debian-12")
    script, file = db.provision
    assert isinstance(script, ScriptStep) and script.args == ("--init",) and script.run == "always"
    assert isinstance(file, FileStep) and file.mode == "0755" and file.privileged is False


def test_models_are_frozen(tmp_path: Path):
    envfile = parse(b'[machines.web]\nmemory = "1G"\n', "Envfile", None)
    with pytest.raises(Exception):
        envfile.machines["web"].memory = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "text,size",
    [("512M", 512 * MIB), ("1G", GIB), ("1.5G", 3 * GIB // 2), ("2048K", 2 * MIB), ("1GiB", GIB),
     ("1gb", GIB), ("4096", 4096)],
)
def test_sizes(text: str, size: int):
    assert parse_size(text) == size


def test_format_size():
    assert [format_size(s) for s in (512 * MIB, GIB, 1536 * MIB, 100)] == ["512M", "1G", "1536M", "100"]


def test_every_problem_is_reported_at_once():
    text = b'[defaults]\ncpus = 0\nmemory = "x"\n[machines.A]\n[machines.b]\nprovider = "vm"\n'
    with pytest.raises(EnvfileError) as info:
        parse(text, "Envfile", None)
    assert [p.path for p in info.value.problems] == ["defaults.cpus", "defaults.memory", "machines.A",
                                                     "machines.b.provider"]
    assert [p.line for p in info.value.problems] == [2, 3, 4, 6]


def test_byte_order_mark_is_accepted():
    parse(b"\xef\xbb\xbf[machines.web]\n", "Envfile", None)


def test_missing_envfile_is_a_usage_error(tmp_path: Path):
    from vbox_cli.errors import UsageError

    with pytest.raises(UsageError, match="no Envfile"):
        load(tmp_path / "Envfile")


def test_keys_that_look_like_pydantic_markers():
    # found by hypothesis: pydantic marks dict-key errors with "[key]" in the location
    for text in (b'"[key]" = []\n', b'[machines."[key]"]\n', b'[machines.web]\n"[key]" = 1\n'):
        with pytest.raises(EnvfileError) as info:
            parse(text, "Envfile", None)
        assert all(p.line >= 1 for p in info.value.problems)
