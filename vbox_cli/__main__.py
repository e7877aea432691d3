"""python -m vbox_cli: the `vbox` command."""

import sys

from vbox_cli.entry import vbox_main

sys.exit(vbox_main())
