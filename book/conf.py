"""Sphinx configuration of the book (``python -m book.build`` passes this folder as the configuration directory;
the source folder is generated under ``build/book/src``)."""

project = "Attribution and disentanglement of synthetic images"
html_title = "Notebook workbench: attribution and disentanglement"

extensions = ["myst_nb"]
# The notebooks were executed by `make notebooks` (papermill); the book only renders what they hold.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_number_source_lines = False

root_doc = "index"
exclude_patterns = []
# A link to a file outside the book (../helpers/x.py) is a printed warning; book.build fails only on errors.
# Outputs of a MIME type the book cannot show (widget state) are left out without a warning.
suppress_warnings = ["mystnb.unknown_mime_type"]

html_theme = "sphinx_book_theme"
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "footer_content_items": [],
    # the landing page's results table takes the width of the page's "contents" column
    "secondary_sidebar_items": {"**": ["page-toc"], "index": []},
}
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
