"""The store backends every backend-parametrised test runs on (tests/conftest.py:
`backend`, `db_target`). A module of its own: tests/robustness has a conftest.py too, so
`from conftest import ...` would find whichever was imported first."""

BACKENDS = ("sqlite", "postgresql")
