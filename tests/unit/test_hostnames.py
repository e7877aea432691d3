"""The project's block in /etc/hosts (here a scratch copy): written, updated and removed
without touching the rest of the file or another project's block."""

from __future__ import annotations

import pytest

from providers import hostnames


def test_blocks_are_the_projects_own(tmp_path):
    hosts = tmp_path / "hosts"
    original = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n# a comment of the admin\n"
    hosts.write_text(original)
    hostnames.set_names("demo-abc123", {"web": "10.101.7.2", "db": "10.101.7.3"}, hosts)
    hostnames.set_names("other-def456", {"web": "10.102.1.2"}, hosts)
    text = hosts.read_text()
    assert text.startswith(original)
    assert "10.101.7.2\tweb.demo-abc123.vbox\n" in text and "10.101.7.3\tdb.demo-abc123.vbox\n" in text
    assert "10.102.1.2\tweb.other-def456.vbox\n" in text
    hostnames.set_names("demo-abc123", {"web": "10.101.7.2"}, hosts)  # db went
    assert "db.demo-abc123.vbox" not in hosts.read_text() and "web.other-def456.vbox" in hosts.read_text()
    assert hostnames.leaks("demo-abc123", hosts) == ["/etc/hosts block of project demo-abc123"]
    hostnames.remove("demo-abc123", hosts)
    hostnames.remove("other-def456", hosts)
    assert hosts.read_text() == original and hostnames.leaks(None, hosts) == []


@pytest.mark.parametrize("names", [{"web\n10.0.0.1\tevil": "10.0.0.2"}, {"web": "10.0.0.2 evil.example"}])
def test_nothing_but_names_and_addresses_goes_in(tmp_path, names):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n")
    with pytest.raises(ValueError):
        hostnames.set_names("demo-abc123", names, hosts)
    assert hosts.read_text() == "127.0.0.1\tlocalhost\n"
