"""`python -m dfkd`: the same command line as `dfkd`, for an interpreter without the script."""

from dfkd.cli import main

main()
