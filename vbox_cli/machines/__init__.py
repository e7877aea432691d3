"""The orchestration: bringing a project's machines up, down and away, one concern per
module (session, placement, runner, up, provision, down, status). It reports through
an EventStream (vbox_cli/events.py) and never prints; it never names a provider."""

from vbox_cli.machines.down import destroy, halt
from vbox_cli.machines.provision import provision
from vbox_cli.machines.runner import Result
from vbox_cli.machines.session import Session
from vbox_cli.machines.status import prune_box_users, status
from vbox_cli.machines.up import up

__all__ = ["Result", "Session", "destroy", "halt", "provision", "prune_box_users", "status", "up"]
