"""The client settings every client test uses: small numbers so that tests are quick.

The code paths are the same as with the defaults.  A module of its own (not ``client_fixtures``)
so that test modules and the child process can import it without importing the fixtures.
"""

from __future__ import annotations

from client import Settings

TEST_SETTINGS = Settings(
    pre_key_target=12,
    pre_key_low_water=4,
    kem_pre_key_target=4,
    kem_pre_key_low_water=2,
    kyber_pre_key_target=4,
    kyber_pre_key_low_water=2,
    backoff_base=0.02,
    backoff_cap=0.5,
)
