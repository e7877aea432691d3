"""Rendering the templates beside this package (libvirt XML, LXC configs) with jinja2:
undefined values are errors, and XML templates escape what they are given."""

from __future__ import annotations


def render(template: str, **values) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("providers", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(["xml.j2"], default_for_string=False, default=False),
                      keep_trailing_newline=True)
    return env.get_template(template).render(**values)
