"""Seeing where the money goes: alerts and the usage ledger, off the request path."""
