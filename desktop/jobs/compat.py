"""A guard against PySide6 releases that assume Python 3.12's immortal singletons.

PySide6 6.12.0 hands out `None` (from every void method: `painter.save()`,
`label.setText()` ...) and `True` (from `Signal.emit()`) without taking a reference. On
Python >= 3.12 those objects are immortal and nothing happens; on 3.11 each call takes
one reference away, and after some tens of thousands of calls the interpreter aborts
with "none_dealloc" or "bool_dealloc" — a photo app repainting a grid gets there in
minutes. (6.11.3 is fine; the real fix is `PySide6-Essentials!=6.12.0` on 3.11.)

At import we measure the leak with a few harmless calls. Only when it is there, we give
None, True and False 2**40 extra references — what 3.12 does with immortality — so
the missing ones can never reach zero. Otherwise this module does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)

_PROBES = 64
_HEADROOM = 1 << 40  # ~10^12 leaked calls: more than any session will ever make


class _Probe(QObject):
    fired = Signal()


def _lost(obj: object, action: Callable[[], object]) -> int:
    """References to `obj` that `_PROBES` calls of `action` took away (0 when PySide6 is right)."""
    before = sys.getrefcount(obj)
    for _ in range(_PROBES):
        action()
    return before - sys.getrefcount(obj)


def _refcount_cell(obj: object) -> ctypes.c_ssize_t:
    # CPython: ob_refcnt is the first field of every object, at id(obj).
    return ctypes.c_ssize_t.from_address(id(obj))


def _guard() -> dict[str, int]:
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return {}
    probe = _Probe()
    lost = {"None": _lost(None, lambda: probe.setObjectName("lumen-probe")),
            "True": _lost(True, probe.fired.emit)}
    if max(lost.values()) >= _PROBES // 2:
        for obj in (None, True, False):
            _refcount_cell(obj).value += _HEADROOM
        log.warning("this PySide6 (%s) drops references to None/True on Python %d.%d; guarded. "
                    "Install another PySide6 release (e.g. 6.11.3) to be rid of it.",
                    _pyside_version(), *sys.version_info[:2])
    else:
        for name, n in lost.items():  # noise from other threads: give back whatever went
            for _ in range(max(n, 0)):
                ctypes.pythonapi.Py_IncRef(ctypes.py_object({"None": None, "True": True}[name]))
    return lost


def _pyside_version() -> str:
    import PySide6

    return PySide6.__version__


LEAKS = _guard()
"""References lost per `_PROBES` calls at import, by object ({} when not measured)."""
