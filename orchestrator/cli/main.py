"""`orchestrate`: the thin command line. Imports Caffe lazily; the only place that turns
exceptions into exit codes (0 ok, 1 doctor errors, 2 bad config/input, 3 diverged, 130 interrupted,
141 broken pipe)."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from common.child import die_with_parent
from common.errors import UserError
from orchestrator.contract import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, EXIT_OK, Status

DESCRIPTION = """Train semantic-segmentation nets on BVLC Caffe: raw images to LMDBs, nets that start
right, a doctor that finds the classic Caffe mistakes, supervised training with validation
(mIoU), snapshots and resume, predictions and reports."""
EPILOG = """a first run:
  orchestrate data synth --out data/synth      a small synthetic dataset
  orchestrate run experiments/demo.yaml        check the net, then train into runs/demo
  orchestrate resume runs/demo                 continue after Ctrl-C or a crash
  orchestrate predict runs/demo --list data/synth/val.txt --out pred --eval
  tensorboard --logdir runs/                   curves and pictures in a browser

`orchestrate COMMAND --help` explains each command; README.md has the rest.
exit codes: 0 ok, 1 the doctor found errors, 2 bad config or input, 3 diverged, 130 interrupted,
141 the reader of the output went away (`| head`), quietly"""


def _parser() -> argparse.ArgumentParser:
    from data_prep import cli as data_cli
    from orchestrator.cli import commands as cli_commands
    from orchestrator.cli import fix as cli_fix
    from orchestrator.cli import runs as cli_runs

    p = argparse.ArgumentParser(
        prog="orchestrate", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="store_true", help="print version, Caffe commit, build and pycaffe path")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    data_cli.register(sub)
    cli_commands.register(sub)
    cli_runs.register(sub)
    cli_fix.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    die_with_parent()  # a sweep's trial: no run outlives its sweep
    try:
        return _main(argv)
    except BrokenPipeError:  # `orchestrate check --json | head`: the reader has all it wanted
        _drop_output()
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # --help, or argparse's own usage error: its text must reach the pipe now
        sys.stdout.flush()
        raise
    try:
        if args.version:
            from orchestrator.cli.envinfo import version_text

            print(version_text())
            return _flushed(EXIT_OK)
        if not getattr(args, "func", None):
            parser.print_help()
            return _flushed(EXIT_BAD_INPUT)
        return _flushed(int(args.func(args)))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return Status.INTERRUPTED.exit_code
    except BrokenPipeError:
        raise
    except OSError as e:  # disk full, permissions, a hostile path: the file, why, a fix; no traceback
        print(f"error: {UserError(*os_error_text(e))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as e:  # Path.resolve() on a symlink loop says so as a RuntimeError (Python < 3.13)
        loop = e.__context__
        if not (isinstance(loop, OSError) and loop.errno == errno.ELOOP):
            raise
        print(f"error: {UserError(*os_error_text(loop))}", file=sys.stderr)
        return EXIT_BAD_INPUT


# what to do about an OSError on a path the user gave, by errno
_OS_FIXES = {
    errno.ENAMETOOLONG: "use a shorter path: a file or folder name has at most 255 bytes (UTF-8)",
    errno.ENOTDIR: "a part of the path is a file, not a folder: give another path",
    errno.ELOOP: "the path goes round a loop of symbolic links: fix the links or give another path",
    errno.EEXIST: "something of that name is already there: give a new path, or remove it",
    errno.EISDIR: "that is a folder: give the path of a file",
    errno.EACCES: "check the permissions of the path (and of the folders above it)",
    errno.EPERM: "check the permissions of the path (and of the folders above it)",
    errno.ENOSPC: "free some disk space, then run the same command again",
    errno.EROFS: "the file system is read-only: write somewhere else",
}


def os_error_text(e: OSError) -> tuple[str, str]:
    """(message naming the file, fix) for an OSError that reached the command line."""
    from orchestrator.jsonio import io_error_text

    if e.errno == errno.ENOSPC:
        return io_error_text(e), _OS_FIXES[errno.ENOSPC]
    where = f": {e.filename}" if e.filename else ""
    return f"{e.strerror or e}{where}", _OS_FIXES.get(e.errno or 0, "check the path named above")


def _flushed(code: int) -> int:
    """Flush stdout while a closed pipe can still be handled here (not in the interpreter's exit)."""
    sys.stdout.flush()
    return code


def _drop_output() -> None:
    """Point stdout and stderr at /dev/null, so the interpreter's final flush finds no broken pipe."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # not a real file (a test's capture): nothing to flush later
            pass
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
