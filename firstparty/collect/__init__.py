"""Collection: the wire schema, validation and enrichment of incoming events."""
