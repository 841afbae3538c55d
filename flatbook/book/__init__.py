"""The book's machinery: the registry of chapters and profiles (``registry``), parameter cells and
overrides (``parameters``), executing a chapter with papermill and its run box (``runner``),
staging and rendering the HTML book offline (``site``, ``sphinx_offline``) and the command line
(``cli``, run as ``python -m flatbook``)."""
