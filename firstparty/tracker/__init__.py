"""The browser tracker served at /fp.js."""
