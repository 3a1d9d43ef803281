"""`python -m appliance` is the `ucupdates` command."""

import sys

from .cli import main

sys.exit(main())
