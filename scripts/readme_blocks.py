"""Generated blocks in READMEs (scripts/gen_role_docs.py, scripts/gen_tf_docs.py): a
block lives between two marker comments; ``--check`` reports READMEs out of date."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path


def replace_block(text: str, begin: str, end: str, block: str, heading: str = "") -> str:
    """``text`` with ``block`` between the markers (appended, after ``heading``, when absent)."""
    if begin not in text or end not in text:
        return text.rstrip() + f"\n\n{heading}{begin}\n{block}{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}{end}{tail}"


def main(doc: str, readmes: Iterable[tuple[Path, Callable[[str], str], str]], root: Path, script: str,
         argv: list[str] | None = None) -> int:
    """Rewrite each README (path, text -> wanted text, title of a new README), or with
    ``--check`` only name the stale ones (exit 1)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report READMEs that are out of date")
    args = parser.parse_args(argv)
    stale = []
    for readme, wanted_for, title in readmes:
        current = readme.read_text() if readme.is_file() else f"# {title}\n"
        wanted = wanted_for(current)
        if wanted == current:
            continue
        stale.append(readme.relative_to(root))
        if not args.check:
            tmp = readme.with_suffix(".md.tmp")
            tmp.write_text(wanted)
            tmp.replace(readme)
    if args.check and stale:
        for path in stale:
            print(f"error: {path} is out of date: run python scripts/{script}", file=sys.stderr)
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0
