"""The delivery tests' fake receiver, for the admin tests."""

from tests.delivery.conftest import receiver

__all__ = ["receiver"]
