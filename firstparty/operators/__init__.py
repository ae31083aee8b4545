"""Operator accounts (email, password, role) and the audit log of what people changed."""
