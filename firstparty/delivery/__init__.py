"""Delivery: the outbox, the queue (Redis or embedded), the worker, retries and replay."""
