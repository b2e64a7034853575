"""The command line every box service shares: `--config FILE [--log-level L]`.

A settings error exits 2 with `FILE: field: problem` lines on stderr (the
supervisor keeps the tail as the service's last error); an OS error at start
(a port in use, a missing file) exits 1.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Awaitable, Callable


def service_main(prog: str, run: Callable[[str], Awaitable[int]], settings_error: type[Exception],
                 argv: list[str] | None = None, description: str | None = None,
                 loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="settings file (YAML or JSON)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(run(args.config))
    except settings_error as exc:
        for field, problem in exc.errors.items():
            print(f"{args.config}: {field}: {problem}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
