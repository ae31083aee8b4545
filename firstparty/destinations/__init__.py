"""Destinations: the adapter interface (`base`), one module per platform, and the registry."""
