-- Schema version 4 of the relay's PostgreSQL store: linked devices (server/device_store.py).
--
-- * devices.identity_key: every device has an identity key of its own.  Existing rows take their
--   account's key, so a version 1 or 2 account (whose devices all shared one key) becomes a primary
--   whose key is accounts.identity_key, with any further devices it had kept until the primary
--   publishes its first signed device list.
-- * device_lists: the newest signed device list of each account (the relay verified its signature
--   against accounts.identity_key); versions only grow.
-- * link_mailboxes: sealed linking payloads waiting for a companion, under an id derived from a
--   secret the relay never sees; taken (deleted) once, or expired.

ALTER TABLE devices ADD COLUMN identity_key bytea;
UPDATE devices d SET identity_key = a.identity_key FROM accounts a WHERE a.account = d.account;
ALTER TABLE devices ALTER COLUMN identity_key SET NOT NULL;

CREATE TABLE device_lists (
    account    text PRIMARY KEY REFERENCES accounts (account),
    version    bigint NOT NULL,
    signed     bytea NOT NULL,
    updated_at double precision NOT NULL
);

CREATE TABLE link_mailboxes (
    mailbox    bytea PRIMARY KEY,
    account    text NOT NULL,
    payload    bytea NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX link_mailboxes_by_account ON link_mailboxes (account);
