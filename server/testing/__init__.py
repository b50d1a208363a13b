"""Support for running the relay against real infrastructure in tests and benchmarks.

Nothing here is imported by the relay itself.
"""
