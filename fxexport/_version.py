"""The fxexport version, in a module of its own so any module can read it without importing the package root.

Example:
    >>> from fxexport._version import __version__
    >>> __version__.count(".") >= 1
    True
"""

__version__ = "0.1.0"
