"""Lumen: a desktop photo manager that finds photos by meaning.

The package `desktop` is the application. Everything directly inside it except
`jobs.py`, `app.py`, `cli.py` and `__main__.py` is the Qt-free core; `desktop/ui/`
holds the widgets.
"""

__version__ = "0.1.0"
