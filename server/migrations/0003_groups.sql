-- Schema version 3 of the relay's PostgreSQL store: groups with server-side fan-out (server/group_ops.py).
--
-- A group is known by a 16-byte id its creator chose.  Its membership is a chain of signed changes
-- (e2e/group_membership.py): group_changes keeps every change, groups the newest epoch and digest, and
-- group_members the member list of the newest change.  A message fanned out to a group is an ordinary
-- queued message per member device, carrying the group id.

ALTER TABLE messages ADD COLUMN group_id bytea;

CREATE TABLE groups (
    group_id   bytea PRIMARY KEY,
    epoch      bigint NOT NULL,
    digest     bytea NOT NULL,
    created_at double precision NOT NULL
);

CREATE TABLE group_members (
    group_id     bytea NOT NULL REFERENCES groups (group_id),
    account      text NOT NULL REFERENCES accounts (account),
    identity_key bytea NOT NULL,
    admin        boolean NOT NULL,
    PRIMARY KEY (group_id, account)
);
CREATE INDEX group_members_by_account ON group_members (account);

CREATE TABLE group_changes (
    group_id   bytea NOT NULL REFERENCES groups (group_id),
    epoch      bigint NOT NULL,
    change     bytea NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (group_id, epoch)
);
