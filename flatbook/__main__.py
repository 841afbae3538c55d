"""``python -m flatbook``: ``train`` computes experiments from configs (``flatbook.launch``, the
toolkit alone: also under torchrun); every other command is the book's (``flatbook.book.cli``)."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["train"]:
        from .launch import main as train_main

        raise SystemExit(train_main(sys.argv[2:]))
    from .book.cli import main

    raise SystemExit(main())
