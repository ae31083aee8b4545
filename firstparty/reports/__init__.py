"""Reports and audiences over the collected data."""
