"""Static files Lumen ships: the Qt style sheet, the tag vocabulary, the README screenshot.

A package only so that a regular (non-editable) install carries these files next to
`desktop/`, where `desktop.app` and `desktop.captions` look for them.
"""
