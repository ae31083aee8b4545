"""Alerts: rules from `[alerts]` (rules.py), judged over figures read from the database
(figures.py, evaluate.py), their state kept in the database (state.py), announced by webhook and
email (notify.py), every minute by one process at a time (loop.py). docs/alerts.md."""
