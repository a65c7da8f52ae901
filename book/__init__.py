"""The rendered book of the executed notebooks: ``make book`` (``python -m book.build``) writes
``build/book/html/index.html`` with Sphinx, MyST-NB and sphinx-book-theme, from ``build/executed/`` without
re-executing anything."""
