"""``python -m fxexport``: the same as the ``fxexport`` command."""

from fxexport.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
