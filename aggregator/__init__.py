"""aggregator: a feed aggregator and near-duplicate story deduplicator.

The package reads like the pipeline it runs:
config -> fetch -> parse -> normalize -> dedup -> store -> digest.
"""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/aggregator-project/aggregator"
