"""Errors the CLI turns into one line on stderr and an exit code (2: bad input, 1: failure)."""


class DfkdError(Exception):
    """A failure the user can act on; the message is the whole story."""

    exit_code = 1


class UsageError(DfkdError):
    """The user asked for something that cannot work as asked (a wrong name, a mismatch)."""

    exit_code = 2


class DiskFull(DfkdError):
    """A write failed for want of space: the way on is to free some, or to write elsewhere."""


class PluginError(DfkdError):
    """A plugin failed to load or conflicts with another; raised only in strict mode."""
