"""`python -m appliance` is the `ucupdates` command."""

import sys

from appliance.cli import main

sys.exit(main())
