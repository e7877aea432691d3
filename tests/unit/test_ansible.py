"""The inventory vbox makes for Ansible, read back by Ansible's own inventory code (INI
and JSON), and the ansible step's errors before it runs anything."""

from __future__ import annotations

import json
import shlex

import pytest

from provisioners.ansible import as_ini, inventory
from vbox_cli.envfile.load import load
from vbox_cli.project import Project

ENVFILE = """\
[machines.web]
provision = [{ ansible = "site.yml", groups = ["webservers", "app"] }, { shell = "true" }]

[machines.db-1]
provision = [{ ansible = "site.yml", groups = ["app"] }]

[machines.later]
"""


def _project(tmp_path):
    folder = tmp_path / "a project with spaces"
    folder.mkdir()
    (folder / "Envfile").write_text(ENVFILE)
    (folder / "site.yml").write_text("- hosts: all\n")
    records = {"web": {"address": "10.1.2.3", "host_key": "ssh-ed25519 AAAA", "user": "vbox", "port": 22},
               "db-1": {"address": "10.1.2.4", "host_key": "ssh-ed25519 BBBB", "user": "vbox", "port": 22},
               "later": {"address_index": 5}}  # not made: not in the inventory
    return Project.at(folder), load(folder / "Envfile").machines, records


def _read_with_ansible(path):
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    return InventoryManager(loader=DataLoader(), sources=[str(path)])


@pytest.mark.parametrize("form", ["ini", "json"])
def test_ansible_reads_the_inventory_as_vbox_means_it(tmp_path, form):
    project, machines, records = _project(tmp_path)
    data = inventory(project, machines, records)
    path = tmp_path / f"hosts.{form if form == 'json' else 'ini'}"
    path.write_text(as_ini(data) if form == "ini" else json.dumps(data))
    manager = _read_with_ansible(path)
    assert sorted(h.name for h in manager.get_hosts()) == ["db-1", "web"]
    assert sorted(h.name for h in manager.get_hosts("app")) == ["db-1", "web"]
    assert [h.name for h in manager.get_hosts("webservers")] == ["web"]
    web = manager.get_host("web").get_vars()
    assert (web["ansible_host"], web["ansible_port"], web["ansible_user"]) == ("10.1.2.3", 22, "vbox")
    assert web["ansible_ssh_private_key_file"] == str(project.client_key)  # the path with its spaces, whole
    args = shlex.split(web["ansible_ssh_common_args"])  # as Ansible splits them for ssh
    assert args[args.index("-o") + 1] == "IdentitiesOnly=yes"
    assert f'UserKnownHostsFile="{project.known_hosts}"' in args  # quoted for ssh's own config syntax
    assert "StrictHostKeyChecking=yes" in args and f"HostKeyAlias={project.object_name('web')}" in args


def test_the_inventory_refuses_a_recorded_address_that_is_not_one(tmp_path):
    from vbox_cli.errors import VboxError

    project, machines, records = _project(tmp_path)
    records["web"]["address"] = "10.1.2.3 -oProxyCommand=x"
    with pytest.raises(VboxError, match="is not an IP address"):
        inventory(project, machines, records)


def test_an_ansible_step_without_ansible_says_how_to_get_it(tmp_path, monkeypatch):
    import provisioners.ansible as ansible
    from provisioners.steps import StepContext
    from vbox_cli.errors import VboxError

    project, machines, _ = _project(tmp_path)
    monkeypatch.setattr(ansible, "playbook_command", lambda: None)
    ctx = StepContext(conn=None, work="", machine="web", index=0, project_dir=project.folder, on_line=print)
    with pytest.raises(VboxError) as missing:
        ansible.run_playbook(machines["web"].provision[0], ctx)
    assert "ansible-playbook is not installed" in missing.value.message and "vbox-cli[ansible]" in missing.value.hint


def test_a_group_or_variable_name_ansible_would_not_take_is_refused(tmp_path):
    from vbox_cli.errors import EnvfileError

    (tmp_path / "site.yml").write_text("- hosts: all\n")
    (tmp_path / "Envfile").write_text('[machines.web]\nprovision = [{ ansible = "site.yml", '
                                      'groups = ["web servers"], extra_vars = { "a-b" = 1 } }]\n')
    with pytest.raises(EnvfileError) as refused:
        load(tmp_path / "Envfile")
    text = str(refused.value)
    assert "'web servers' is not a name Ansible takes" in text and "'a-b' is not a name Ansible takes" in text


def test_validate_says_when_ansible_is_missing(tmp_path, monkeypatch):
    import provisioners.ansible as ansible
    from vbox_cli.errors import EnvfileError

    (tmp_path / "site.yml").write_text("- hosts: all\n")
    (tmp_path / "Envfile").write_text('[machines.web]\nprovision = [\n  { shell = "true" },\n'
                                      '  { ansible = "site.yml" },\n]\n')
    load(tmp_path / "Envfile")  # installed here (the test extra): valid
    monkeypatch.setattr(ansible, "playbook_command", lambda: None)
    with pytest.raises(EnvfileError) as missing:
        load(tmp_path / "Envfile")
    problem = missing.value.problems[0]
    assert (problem.line, problem.path) == (4, "machines.web.provision[1].ansible")
    assert problem.message == "ansible-playbook is not installed on this host" and "ansible-core" in problem.hint
