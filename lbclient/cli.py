"""The ``lbclient`` command: ``demo``, ``schedulers``, ``resolve`` and ``watch``.

Kept to argparse and the standard library; rich (the ``[cli]`` extra) only draws nicer output.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lbclient._inspect_cli import add_commands as add_inspect_commands
from lbclient._inspect_cli import run as run_inspect


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    from lbclient import __version__
    from lbclient._demo import DEFAULT_SCHEDULERS

    parser = argparse.ArgumentParser(
        prog="lbclient", description="Client-side load balancing for httpx and grpcio."
    )
    parser.add_argument("--version", action="version", version=f"lbclient {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="balance requests over real local backends with several schedulers",
        description="Start 5 HTTP backends on loopback (one slow, one flaky), send requests "
        "through each scheduler and print per-backend tables. Ends by itself.",
    )
    demo.add_argument(
        "--requests", type=_positive, default=1000, help="requests per scheduler (1000)"
    )
    demo.add_argument(
        "--concurrency", type=_positive, default=16, help="requests in flight at once (16)"
    )
    demo.add_argument(
        "--schedulers",
        default=None,
        help=f"comma-separated names (default: {','.join(DEFAULT_SCHEDULERS)}); "
        "see 'lbclient schedulers'",
    )
    demo.add_argument("--plain", action="store_true", help="plain text output, even with rich")
    commands.add_parser(
        "schedulers", help="list the scheduler names this install knows, with what each does"
    )
    add_inspect_commands(commands)
    return parser


def scheduler_lines() -> list[str]:
    """One line per selectable name: the first line of its class docstring, or the name it
    is an alias of."""
    from lbclient.schedulers import available_schedulers, scheduler_class

    names = available_schedulers()
    width = max(len(name) for name in names) + 2
    lines = []
    for name in names:
        cls = scheduler_class(name)
        if name != cls.name:
            description = f"alias of {cls.name}"
        else:
            doc = (cls.__doc__ or "").strip()
            description = doc.splitlines()[0].replace("``", "") if doc else "(no description)"
        lines.append(f"{name:<{width}}{description}")
    return lines


def _quiet_broken_pipe() -> int:
    """The reader went away (``lbclient schedulers | head -3``): stop without a traceback.

    stdout is pointed at /dev/null so the interpreter's final flush cannot fail again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lbclient`` console script and of ``python -m lbclient``."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at exit
    except BrokenPipeError:
        return _quiet_broken_pipe()
    return code


def _run(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from lbclient.schedulers import available_schedulers

    if args.command in ("resolve", "watch"):
        return run_inspect(args)
    if args.command == "schedulers":
        print("\n".join(scheduler_lines()))
        return 0
    from lbclient._demo import run_demo

    schedulers = None
    if args.schedulers:
        schedulers = [name.strip() for name in args.schedulers.split(",") if name.strip()]
        unknown = sorted(set(schedulers) - set(available_schedulers()))
        if unknown:
            parser.error(
                f"unknown scheduler(s) {', '.join(unknown)}; choose from: "
                f"{', '.join(available_schedulers())}"
            )
    try:
        run_demo(
            requests=args.requests,
            concurrency=args.concurrency,
            schedulers=schedulers,
            plain=args.plain,
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
