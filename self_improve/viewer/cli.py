"""``self-improve-buffer SOURCE... [show ID]``: what an ExIt buffer holds and how it got there, read-only.

SOURCE is a buffer checkpoint (the run's ``buffer_path``), a live Redis buffer (``redis://host:port/db``
with ``--prefix``), or one or more vf-eval ``results.jsonl`` / v1 ``traces.jsonl`` files. Usage, outputs
and how to read the figures: docs/curriculum-viewer.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from self_improve import cli_args
from self_improve.buffer.redis_auth import is_redis_url
from self_improve.viewer import export, lineage, plots, runlog, snapshot, summary
from self_improve.viewer.config import ViewerConfig, ViewerError, is_results

PROG = "self-improve-buffer"
DESCRIPTION = ("Show what an ExIt buffer holds and how it got there: a summary, one instance's chain (show ID), "
               "the paper's Figs. 6 and 7 (--plot), JSON or CSV. Never writes to the buffer.")
EPILOG = ("SOURCE: a buffer checkpoint file (buffer_path), redis://host:port/db (with --prefix; the password, if "
          "any, through --password-var), or results.jsonl / traces.jsonl files of vf-eval runs. "
          "Details: docs/curriculum-viewer.md.")
SHOW = "show"


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``ViewerConfig`` and the positional words ``SOURCE... [show ID]``."""
    parser = cli_args.build_parser(ViewerConfig, prog=PROG, description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("words", nargs="+", metavar="SOURCE", help="buffer file, redis:// URL or .jsonl files; "
                        "end with `show ID` to print instance ID's chain")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ViewerConfig:
    """The ``ViewerConfig`` of a command line; a bad value raises ``ValueError`` naming its flag."""
    namespace = build_parser().parse_intermixed_args(argv)  # `SOURCE --prefix P show ID` too
    words, show = list(namespace.words), None
    if len(words) >= 2 and words[-2] == SHOW:
        try:
            show = int(words[-1])
        except ValueError:
            raise ValueError(f"show ID: must be followed by an instance id, got {words[-1]!r}") from None
        words = words[:-2]
    elif words[-1] == SHOW:
        raise ValueError("show ID: must be followed by an instance id")
    return cli_args.from_namespace(ViewerConfig, namespace, sources=tuple(words), show=show)


def read_buffer(config: ViewerConfig) -> snapshot.BufferSnapshot:
    """The snapshot SOURCE names (a file or a Redis URL)."""
    source = config.sources[0]
    if is_redis_url(source):
        return snapshot.read_redis(source, config.prefix, config.password_var)
    return snapshot.read_file(source)


def title_of(config: ViewerConfig) -> str:
    """What the figures say was run: ``--title``, else the source's name."""
    if config.title:
        return config.title
    return ", ".join(_short(source) for source in config.sources)


def _short(source: str) -> str:
    if is_redis_url(source):
        from self_improve.buffer.redis_auth import redact

        return redact(source)
    return str(Path(source))


def show_buffer(config: ViewerConfig) -> None:
    """Summary (or chain), plots and export of a buffer source."""
    held = read_buffer(config)
    kappa = held.kappa if config.kappa is None else config.kappa
    if config.show is not None:
        found = lineage.chain(held, config.show, kappa)
        print(json.dumps(found, indent=2, ensure_ascii=False) if config.json
              else lineage.format_chain(found, config.width))
        return
    numbers = summary.buffer_summary(held, kappa, config.top)
    if config.plot is not None:
        for path in plots.plot_buffer(held, config.plot, title_of(config)):
            print(f"wrote {path}", file=sys.stderr)
    if config.csv is not None:
        export.write_csv(export.instance_rows(held, kappa), config.csv)
        print(f"wrote {config.csv}", file=sys.stderr)
    print(export.buffer_json(numbers, held) if config.json else summary.format_buffer(numbers))


def show_run(config: ViewerConfig) -> None:
    """Summary, plots and export of results.jsonl sources."""
    groups = runlog.read_runs(list(config.sources))
    numbers = summary.run_summary(groups)
    if config.plot is not None:
        written = plots.plot_run(groups, config.plot, title_of(config))
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
        if config.plot / plots.FIG7_FILE not in written:
            print(f"no {plots.FIG7_FILE}: the rows carry no buffer metrics (run with row_metrics=\"all\")",
                  file=sys.stderr)
    if config.csv is not None:
        export.write_csv([group.row() for group in groups], config.csv)
        print(f"wrote {config.csv}", file=sys.stderr)
    print(export.run_json(numbers, groups) if config.json else summary.format_run(numbers))


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``self-improve-buffer``: 0, or 2 with a one-line message naming the bad input."""
    try:
        config = parse_args(argv)
        if is_results(config.sources[0]):
            show_run(config)
        else:
            show_buffer(config)
    except (ValueError, ViewerError) as error:  # named by field: the flag is added, as for a bad value
        print(f"{PROG}: error: {cli_args.with_flags(ViewerConfig, str(error))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `| head` closed stdout
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
