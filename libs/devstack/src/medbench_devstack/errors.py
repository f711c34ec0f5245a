"""The one exception the devstack raises when a local service cannot be brought up or down."""


class DevstackError(RuntimeError):
    """A devstack component failed; the message says why and carries the relevant log tail."""
