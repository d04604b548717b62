"""PySide6 widgets and models. They reach the core only through `desktop.jobs`."""
