"""Every place the kit reaches into a dependency's internals, one module per
dependency.

Where a dependency has a public API for what the kit needs, the kit uses it
and nothing is here. Where it has none, the private name is touched in one
small function here, never elsewhere, with the upstream version it was
written against. Each adapter checks the shape it relies on and raises
UpstreamChanged (naming the dependency and what moved) instead of going on
silently wrong; tests/upstream/ exercises every adapter against the pinned
versions, so an upgrade that changes a shape fails there first. The README's
"Dependencies' internals" table lists them with the check to run on upgrade.
"""


class UpstreamChanged(RuntimeError):
    """A dependency no longer has the internal shape an adapter relies on."""

    def __init__(self, dependency: str, written_against: str, what: str):
        super().__init__(
            f"{dependency} changed: {what} (the kit's adapter in upstream/ was written against "
            f"{dependency} {written_against}; see the README's 'Dependencies' internals')."
        )
