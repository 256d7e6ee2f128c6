"""`python -m orchestrator.cli`: the same as `orchestrate`."""

import sys

from orchestrator.cli.main import main

sys.exit(main())
