"""`orchestrate`, the command line: the argparse front (main) and one module per verb group."""

from orchestrator.cli.main import main

__all__ = ["main"]
