"""Back ends, one module each (lxc, kvm, xen), listed in providers/registry.py and
imported only when a machine uses them. Nothing outside this package names a provider,
opens libvirt or sees a libvirt connection."""
