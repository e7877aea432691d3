"""Two machines of a project destroyed at once, on libvirt's test driver: the one that
looks for unused box volumes while the other removes its own volumes does not fail on a
volume gone between the listing and the question (seen on a fresh host: "Storage volume
not found: ... one.cred" failed the destroy of `two`)."""

from __future__ import annotations

import libvirt

from providers import storage


class ListedBeforeItWent:
    """The pool, whose listing was taken before another destroy removed a volume of it."""

    def __init__(self, pool, listed):
        self.pool, self.listed = pool, listed

    def refresh(self, flags):
        return self.pool.refresh(flags)

    def listAllVolumes(self, flags):  # noqa: N802 - libvirt's name
        return self.listed


def test_a_volume_removed_by_a_destroy_beside_this_one_is_not_an_error():
    conn = libvirt.open("test:///default")
    try:
        pool = conn.storagePoolLookupByName("default-pool")
        base = pool.createXML("<volume><name>box-debian-12-1.disk</name><capacity>1024</capacity></volume>", 0)
        other = pool.createXML("<volume><name>vbox-p-one.cred</name><capacity>1024</capacity></volume>", 0)
        listed = pool.listAllVolumes(0)
        other.delete(0)  # `one`'s destroy, beside this one
        assert storage.unused_bases(ListedBeforeItWent(pool, listed)) == ["box-debian-12-1.disk"]
        assert storage.delete_volume(pool, "box-debian-12-1.disk") is True
        assert storage.delete_volume(pool, "box-debian-12-1.disk") is False
        del base
    finally:
        conn.close()
