"""``python -m flatbook`` and the ``flatbook`` console script: ``train`` computes experiments from
configs (``flatbook.launch``, the toolkit alone: also under torchrun, and where the book's packages
are not installed); every other command is the book's (``flatbook.book.cli``)."""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv`` (default: the command line): ``train ...`` to ``flatbook.launch``, the
    rest to the book's command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from .launch import main as train_main

        return train_main(argv[1:])
    from .book.cli import main as book_main

    return book_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
