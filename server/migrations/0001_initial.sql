-- Schema version 1 of the relay's PostgreSQL store (server/pg_store.py).
--
-- Everything a relay node knows lives here; the nodes themselves keep only connections.  Every row
-- that belongs to a device is keyed by (account, device_id), so every table can be partitioned by
-- recipient when one database is no longer enough (docs/scaling.md).
--
-- Times are seconds since the epoch as double precision, passed in by the relay (the store reads no
-- clock).  Keys, signatures and ciphertext are opaque bytea.

-- An account is bound to one identity key by its first registration.
CREATE TABLE accounts (
    account      text PRIMARY KEY,
    identity_key bytea NOT NULL,
    created_at   double precision NOT NULL
);

-- A device of an account, with libsignal's per-install registration id (bundles carry it).  epoch
-- counts the device's authenticated connections: the newest connection holds the largest epoch, and
-- every older one, on any node, must close.
CREATE TABLE devices (
    account         text NOT NULL REFERENCES accounts (account),
    device_id       bigint NOT NULL,
    registration_id bigint NOT NULL,
    created_at      double precision NOT NULL,
    last_seen       double precision NOT NULL,
    epoch           bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account, device_id)
);

-- Signed prekeys per kind: the current one has retired_at NULL; a rotated one stays readable for the
-- grace period after retired_at.
CREATE TABLE signed_prekeys (
    account     text NOT NULL,
    device_id   bigint NOT NULL,
    kind        text NOT NULL,
    key_id      bigint NOT NULL,
    public_key  bytea NOT NULL,
    signature   bytea NOT NULL,
    uploaded_at double precision NOT NULL,
    retired_at  double precision,
    PRIMARY KEY (account, device_id, kind, key_id),
    FOREIGN KEY (account, device_id) REFERENCES devices (account, device_id)
);

-- At most one current signed prekey per device and kind, whatever the nodes do concurrently.
CREATE UNIQUE INDEX signed_prekeys_current
    ON signed_prekeys (account, device_id, kind) WHERE retired_at IS NULL;

-- One-time prekeys: a row is handed out by the statement that deletes it, so never twice.
CREATE TABLE one_time_prekeys (
    account    text NOT NULL,
    device_id  bigint NOT NULL,
    kind       text NOT NULL,
    key_id     bigint NOT NULL,
    public_key bytea NOT NULL,
    signature  bytea,
    PRIMARY KEY (account, device_id, kind, key_id),
    FOREIGN KEY (account, device_id) REFERENCES devices (account, device_id)
);

-- One row per device: the exact size of its queue (for the caps) and the id of the newest message
-- (so a node can tell, without a notification, that a queue has grown).  Enqueueing locks this row
-- before it draws a server id, so one recipient's ids are drawn and committed in the same order.
CREATE TABLE queues (
    account   text NOT NULL,
    device_id bigint NOT NULL,
    count     bigint NOT NULL DEFAULT 0,
    bytes     bigint NOT NULL DEFAULT 0,
    last_id   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account, device_id),
    FOREIGN KEY (account, device_id) REFERENCES devices (account, device_id)
);

-- Server ids are unique across the whole relay, not per queue, so that an id names one message.
CREATE SEQUENCE message_ids AS bigint;

CREATE TABLE messages (
    server_id         bigint PRIMARY KEY DEFAULT nextval('message_ids'),
    recipient_account text NOT NULL,
    recipient_device  bigint NOT NULL,
    sender_account    text NOT NULL,
    sender_device     bigint NOT NULL,
    client_id         text NOT NULL,
    type              integer NOT NULL,
    body              bytea NOT NULL,
    created_at        double precision NOT NULL,
    expires_at        double precision NOT NULL
);
ALTER SEQUENCE message_ids OWNED BY messages.server_id;
CREATE INDEX messages_by_recipient ON messages (recipient_account, recipient_device, server_id);
CREATE INDEX messages_by_expiry ON messages (expires_at);

-- (sender, client id) -> the first copy's server id and a digest of (recipient, type, body), kept as
-- long as a message may live, so that a retried send is recognised after the recipient acknowledged.
CREATE TABLE sent_ids (
    sender_account text NOT NULL,
    sender_device  bigint NOT NULL,
    client_id      text NOT NULL,
    server_id      bigint NOT NULL,
    digest         bytea NOT NULL,
    expires_at     double precision NOT NULL,
    PRIMARY KEY (sender_account, sender_device, client_id)
);
CREATE INDEX sent_ids_by_expiry ON sent_ids (expires_at);

-- The errors below use SQLSTATE class "RL" (not used by PostgreSQL); server/pg_store.py maps each
-- code to the store's exception type.
--   RL001 unknown device   RL002 queue full   RL003 client message id reused   RL004 unknown message

-- Enqueue one message in one round trip and one transaction.  Returns the server id and whether it
-- is a repeat of an earlier send; raises RL001, RL002 or RL003 having changed nothing.
CREATE FUNCTION relay_enqueue(
    p_sender_account text, p_sender_device bigint,
    p_recipient_account text, p_recipient_device bigint,
    p_client_id text, p_type integer, p_body bytea, p_digest bytea,
    p_now double precision, p_ttl double precision, p_max_messages bigint, p_max_bytes bigint,
    OUT server_id bigint, OUT duplicate boolean
) LANGUAGE plpgsql AS $$
DECLARE
    v_count bigint;
    v_bytes bigint;
    v_seen  sent_ids%ROWTYPE;
BEGIN
    -- The row lock orders this recipient's senders: the id drawn below is larger than every id of
    -- this recipient committed before, and every later one will be larger than it.  It also makes a
    -- repeated send to the same recipient (a retry racing its original on another node) wait here
    -- and then find the original below.
    SELECT q.count, q.bytes INTO v_count, v_bytes FROM queues q
     WHERE q.account = p_recipient_account AND q.device_id = p_recipient_device
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no device %/%', p_recipient_account, p_recipient_device USING ERRCODE = 'RL001';
    END IF;

    SELECT s.* INTO v_seen FROM sent_ids s
     WHERE s.sender_account = p_sender_account AND s.sender_device = p_sender_device
       AND s.client_id = p_client_id AND s.expires_at > p_now;
    IF FOUND THEN
        IF v_seen.digest <> p_digest THEN
            RAISE EXCEPTION 'this client message id was already used for a different message'
                USING ERRCODE = 'RL003';
        END IF;
        server_id := v_seen.server_id;
        duplicate := true;
        RETURN;
    END IF;

    IF v_count + 1 > p_max_messages OR v_bytes + octet_length(p_body) > p_max_bytes THEN
        RAISE EXCEPTION 'the queue of %/% is full', p_recipient_account, p_recipient_device
            USING ERRCODE = 'RL002';
    END IF;

    INSERT INTO messages (recipient_account, recipient_device, sender_account, sender_device,
                          client_id, type, body, created_at, expires_at)
    VALUES (p_recipient_account, p_recipient_device, p_sender_account, p_sender_device,
            p_client_id, p_type, p_body, p_now, p_now + p_ttl)
    RETURNING messages.server_id INTO server_id;

    UPDATE queues q SET count = q.count + 1, bytes = q.bytes + octet_length(p_body), last_id = server_id
     WHERE q.account = p_recipient_account AND q.device_id = p_recipient_device;

    -- A concurrent send with the same client id to another recipient (so under another queue's lock)
    -- makes this insert wait for it and then find its live row: a reuse, and everything rolls back.
    INSERT INTO sent_ids AS s (sender_account, sender_device, client_id, server_id, digest, expires_at)
    VALUES (p_sender_account, p_sender_device, p_client_id, server_id, p_digest, p_now + p_ttl)
    ON CONFLICT (sender_account, sender_device, client_id) DO UPDATE
        SET server_id = excluded.server_id, digest = excluded.digest, expires_at = excluded.expires_at
        WHERE s.expires_at <= p_now;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'this client message id was already used for a different message'
            USING ERRCODE = 'RL003';
    END IF;
    duplicate := false;
END
$$;

-- Delete acknowledged messages from the acknowledging device's own queue, all or nothing.  Raises
-- RL004 with the missing ids (comma-separated) in DETAIL if any id is not in that queue.
CREATE FUNCTION relay_ack(p_account text, p_device bigint, p_server_ids bigint[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_removed bigint[];
    v_bytes   bigint;
    v_wanted  bigint[];
BEGIN
    SELECT coalesce(array_agg(DISTINCT id ORDER BY id), '{}') INTO v_wanted FROM unnest(p_server_ids) AS id;
    WITH gone AS (
        DELETE FROM messages m
         WHERE m.recipient_account = p_account AND m.recipient_device = p_device
           AND m.server_id = ANY (v_wanted)
        RETURNING m.server_id, octet_length(m.body) AS size
    )
    SELECT coalesce(array_agg(server_id ORDER BY server_id), '{}'), coalesce(sum(size), 0)
      INTO v_removed, v_bytes FROM gone;
    IF cardinality(v_removed) <> cardinality(v_wanted) THEN
        RAISE EXCEPTION 'no such message in this device''s queue' USING ERRCODE = 'RL004',
            DETAIL = (SELECT string_agg(id::text, ',' ORDER BY id)
                        FROM unnest(v_wanted) AS id WHERE id <> ALL (v_removed));
    END IF;
    IF cardinality(v_removed) > 0 THEN
        UPDATE queues q SET count = q.count - cardinality(v_removed), bytes = q.bytes - v_bytes
         WHERE q.account = p_account AND q.device_id = p_device;
    END IF;
    RETURN cardinality(v_removed);
END
$$;
