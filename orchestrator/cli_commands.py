"""Sub-commands of `orchestrate` other than `data` (filled in by the controller)."""
from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add run/resume/validate/check/doctor-env to the parser."""
