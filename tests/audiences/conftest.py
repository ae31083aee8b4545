"""Fixtures of the audience tests: the two deployments and the fake Twilio of the end-to-end
tests (real events through the app, verified phones through the OTP flow)."""

from tests.e2e.conftest import deployment, twilio

__all__ = ["deployment", "twilio"]
