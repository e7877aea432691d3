"""What a failed container checkpoint says: CRIU's first error that is a cause, not the
"Dumping FAILED" that always ends its log. The logs are CRIU 4.1.1's, from dumps of a vbox
container on this host."""

from __future__ import annotations

from providers.lxc_criu import blocker

NESTED_UTS = """\
Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
Warn  (criu/irmap.c:105): irmap: Can't stat /var/lib/polkit-1/localauthority: No such file or directory
(00.126838) Error (criu/namespaces.c:460): Can't dump nested uts namespace for 19186
(00.126839) Error (criu/namespaces.c:721): Can't make utsns id
(00.128625) Error (criu/util.c:656): exited, status=1
(00.148674) Error (criu/cr-dump.c:2111): Dumping FAILED.
"""

RLIMIT = """\
Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
Error (criu/cr-dump.c:371): Can't get rlimit 0: Operation not permitted
Error (criu/cr-dump.c:1720): Dump core (pid: 19183) failed with -1
Error (criu/cr-dump.c:2111): Dumping FAILED.
"""


def test_the_first_cause_is_said_without_its_source_location():
    assert blocker(NESTED_UTS) == "Can't dump nested uts namespace for 19186"
    assert blocker(RLIMIT) == "Can't get rlimit 0: Operation not permitted"
    assert blocker("Error (criu/fsnotify.c:284): fsnotify: \tCan't dump that handle\n") == \
        "fsnotify: Can't dump that handle"


def test_a_log_of_consequences_only_still_says_something():
    assert blocker("Error (criu/cr-dump.c:2111): Dumping FAILED.\n") == "Dumping FAILED."


def test_no_log_no_reason():
    assert blocker("") == ""
    assert blocker("Warn  (criu/irmap.c:105): irmap: Can't stat /x\n") == ""
