"""``python -m flatbook``: the book's command line (``flatbook.book.cli``)."""

from .book.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
