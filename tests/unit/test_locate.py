"""The TOML position scanner."""

from __future__ import annotations

from vbox_cli.envfile.locate import Positions

DOC = '''# comment
title = "x" # trailing
[machines.web]
memory = "1G"
provision = [
  { shell = """multi
line "quoted" """ },  # comment
  { file = 'a.conf', to = "/etc/a" },
]
"quoted key".sub = 1
[[machines.web.extra]]
a = 1
[[machines.web.extra]]
b = [1, [2, 3]]
'''


def test_positions_of_keys_tables_and_items():
    pos = Positions(DOC)
    assert pos.exact(("title",)) == (2, 1)
    assert pos.exact(("machines",)) == (3, 1)
    assert pos.exact(("machines", "web")) == (3, 1)
    assert pos.exact(("machines", "web", "memory")) == (4, 1)
    assert pos.exact(("machines", "web", "provision", 0)) == (6, 3)
    assert pos.exact(("machines", "web", "provision", 0, "shell")) == (6, 5)
    assert pos.exact(("machines", "web", "provision", 1)) == (8, 3)
    assert pos.exact(("machines", "web", "provision", 1, "to")) == (8, 22)
    assert pos.exact(("machines", "web", "quoted key", "sub")) == (10, 1)
    assert pos.exact(("machines", "web", "extra", 0, "a")) == (12, 1)
    assert pos.exact(("machines", "web", "extra", 1, "b", 1, 0)) == (14, 10)


def test_find_falls_back_to_the_nearest_parent():
    pos = Positions(DOC)
    assert pos.find(("machines", "web", "provision", 1, "mode")) == (8, 3)
    assert pos.find(("nothing", "here")) == (1, 1)


def test_garbage_does_not_raise():
    for text in ["[", "a = {", "x = '''", '"unterminated', "[[a]]\n[[a", "= 1"]:
        Positions(text).find(("a",))
