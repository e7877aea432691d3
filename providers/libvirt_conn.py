"""Opening libvirt connections, with errors a user can act on."""

from __future__ import annotations

from vbox_cli.errors import VboxError

SYSTEM_URI = "qemu:///system"


def connect(uri: str = SYSTEM_URI):
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)  # errors come as exceptions
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise VboxError(f"cannot reach libvirt at {uri}: {exc.get_error_message()}",
                        hint="run `env doctor --fix` to start libvirtd") from None


def render(template: str, **values) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("providers", "templates"), undefined=StrictUndefined,
                      autoescape=True, keep_trailing_newline=True)
    return env.get_template(template).render(**values)
