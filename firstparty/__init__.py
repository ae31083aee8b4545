"""firstparty: self-hosted server-side event tracking and conversion forwarding."""

__version__ = "0.1.0"
