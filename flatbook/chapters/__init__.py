"""One module per chapter of the book (or family of chapters): its parameter checks, tables, figures
and claims (``flatbook.claims.Claim`` objects), built on the toolkit and the theory. The notebooks
in ``book/`` call these in a few lines each. Imports the toolkit and ``flatbook.theory``, never
``flatbook.book``."""
