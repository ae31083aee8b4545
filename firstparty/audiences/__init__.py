"""Audiences: people chosen by rules over their events, kept in sync on ad platforms (issue 16)."""
