"""``python -m fleetstream.bench.contenders <process>``: run one contender process (see the package)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetstream.bench.contenders", description=__doc__)
    parser.add_argument(
        "process",
        choices=(
            "fleetstream-microbatch",
            "fleetstream-realtime",
            "seed-enrich",
            "seed-detect",
            "seed-aggregate",
            "quix",
        ),
    )
    parser.add_argument(
        "--trigger-seconds", type=float, default=None, help="fleetstream's lake micro-batch interval [its default]"
    )
    args = parser.parse_args(argv)
    if args.process.startswith("fleetstream-"):
        from fleetstream.bench.contenders import ours

        return ours.run(args.process.removeprefix("fleetstream-"), args.trigger_seconds)
    if args.process.startswith("seed-"):
        from fleetstream.bench.contenders import seedstyle

        return seedstyle.run(args.process.removeprefix("seed-"))
    from fleetstream.bench.contenders import quix

    return quix.run()


if __name__ == "__main__":
    sys.exit(main())
