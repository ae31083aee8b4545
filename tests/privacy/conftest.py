"""The delivery tests' fake receiver, for the privacy tests."""

from tests.delivery.conftest import receiver

__all__ = ["receiver"]
