"""Interoperability tests: our protocol core against an independent libsignal v3 implementation."""
