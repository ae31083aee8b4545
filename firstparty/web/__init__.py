"""The admin web UI and the demo site."""
