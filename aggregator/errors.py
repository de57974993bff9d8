"""Error hierarchy. Every message names the feed or file at fault and what to do."""


class AggregatorError(Exception):
    """Base class: anything the CLI reports as one clear line and a non-zero exit."""


class ConfigError(AggregatorError):
    """feeds.yaml (or a CLI option) is invalid."""


class StoreError(AggregatorError):
    """The database cannot be opened or is not ours."""


class FetchError(AggregatorError):
    """A feed could not be retrieved (network, HTTP status, size limit)."""


class ParseError(AggregatorError):
    """Fetched bytes are not a usable feed."""


class NotFound(AggregatorError):
    """What the command was asked for is not there (a cluster id): exit 1, not the usage
    error's 2 (an unknown --feed is a bad argument: 2)."""
