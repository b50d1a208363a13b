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

-- The write paths of a message, as functions so that a node commits a whole batch of sends (or of
-- acknowledgements) in one round trip and one transaction.  They never raise for a refused item: each
-- item gets an outcome code, so one refused send cannot undo the others in its batch, and no
-- subtransaction is needed.  Outcome codes (server/pg_store.py maps them to the store's errors):
--   ok | duplicate | unknown_device | queue_full | id_reused | unknown_message
--
-- Lock order: every function here locks queues rows first, in the order the caller sorted the items
-- by (recipient account, device id), and only then touches messages or sent_ids rows.  Two batches
-- on two nodes therefore never wait for each other in a cycle.

-- Enqueue one message.  The queues row lock orders this recipient's senders: the id drawn here is
-- larger than every id of this recipient committed before, and every later one will be larger.  It
-- also makes a repeated send to the same recipient (a retry racing its original on another node) wait
-- here and then find the original.
CREATE FUNCTION relay_enqueue(
    p_sender_account text, p_sender_device bigint,
    p_recipient_account text, p_recipient_device bigint,
    p_client_id text, p_type integer, p_body bytea, p_digest bytea,
    p_now double precision, p_ttl double precision, p_max_messages bigint, p_max_bytes bigint,
    OUT outcome text, OUT server_id bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_count bigint;
    v_bytes bigint;
    v_seen  sent_ids%ROWTYPE;
BEGIN
    SELECT q.count, q.bytes INTO v_count, v_bytes FROM queues q
     WHERE q.account = p_recipient_account AND q.device_id = p_recipient_device
       FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'unknown_device';
        RETURN;
    END IF;

    SELECT s.* INTO v_seen FROM sent_ids s
     WHERE s.sender_account = p_sender_account AND s.sender_device = p_sender_device
       AND s.client_id = p_client_id AND s.expires_at > p_now;
    IF FOUND THEN
        outcome := CASE WHEN v_seen.digest = p_digest THEN 'duplicate' ELSE 'id_reused' END;
        server_id := v_seen.server_id;
        RETURN;
    END IF;

    IF v_count + 1 > p_max_messages OR v_bytes + octet_length(p_body) > p_max_bytes THEN
        outcome := 'queue_full';
        RETURN;
    END IF;

    server_id := nextval('message_ids');
    -- The claim on the client id comes before any other write, so losing it leaves nothing to undo.
    -- A concurrent send with the same client id to another recipient (so under another queues lock)
    -- makes this insert wait for it and then find its live row: a reuse.
    INSERT INTO sent_ids AS s (sender_account, sender_device, client_id, server_id, digest, expires_at)
    VALUES (p_sender_account, p_sender_device, p_client_id, server_id, p_digest, p_now + p_ttl)
    ON CONFLICT (sender_account, sender_device, client_id) DO UPDATE
        SET server_id = excluded.server_id, digest = excluded.digest, expires_at = excluded.expires_at
        WHERE s.expires_at <= p_now;
    IF NOT FOUND THEN
        outcome := 'id_reused';
        server_id := NULL;
        RETURN;
    END IF;

    INSERT INTO messages (server_id, recipient_account, recipient_device, sender_account, sender_device,
                          client_id, type, body, created_at, expires_at)
    VALUES (server_id, p_recipient_account, p_recipient_device, p_sender_account, p_sender_device,
            p_client_id, p_type, p_body, p_now, p_now + p_ttl);
    UPDATE queues q SET count = q.count + 1, bytes = q.bytes + octet_length(p_body), last_id = server_id
     WHERE q.account = p_recipient_account AND q.device_id = p_recipient_device;
    outcome := 'ok';
END
$$;

-- A batch of sends, item i of every array being one message, in one transaction.  The caller sorts
-- the items by recipient (keeping each sender's order within a recipient).  Returns one row per item.
CREATE FUNCTION relay_enqueue_batch(
    p_sender_accounts text[], p_sender_devices bigint[],
    p_recipient_accounts text[], p_recipient_devices bigint[],
    p_client_ids text[], p_types integer[], p_bodies bytea[], p_digests bytea[],
    p_now double precision[], p_ttl double precision[], p_max_messages bigint[], p_max_bytes bigint[]
) RETURNS TABLE (item integer, outcome text, server_id bigint) LANGUAGE plpgsql AS $$
DECLARE
    i integer;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_client_ids), 0) LOOP
        item := i;
        SELECT e.outcome, e.server_id INTO outcome, server_id
          FROM relay_enqueue(p_sender_accounts[i], p_sender_devices[i],
                             p_recipient_accounts[i], p_recipient_devices[i],
                             p_client_ids[i], p_types[i], p_bodies[i], p_digests[i],
                             p_now[i], p_ttl[i], p_max_messages[i], p_max_bytes[i]) AS e;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Delete acknowledged messages from the acknowledging device's own queue, all or nothing: if any id
-- is not in that queue, nothing is deleted and the missing ids are returned.
CREATE FUNCTION relay_ack(
    p_account text, p_device bigint, p_server_ids bigint[],
    OUT outcome text, OUT removed bigint, OUT missing bigint[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_wanted bigint[];
    v_found  bigint[];
    v_bytes  bigint;
BEGIN
    PERFORM 1 FROM queues q WHERE q.account = p_account AND q.device_id = p_device FOR UPDATE;
    SELECT coalesce(array_agg(DISTINCT id ORDER BY id), '{}') INTO v_wanted FROM unnest(p_server_ids) AS id;
    -- Lock the rows first, so that what is found is exactly what is deleted below.
    SELECT coalesce(array_agg(locked.server_id ORDER BY locked.server_id), '{}'), coalesce(sum(locked.size), 0)
      INTO v_found, v_bytes
      FROM (SELECT m.server_id, octet_length(m.body) AS size FROM messages m
             WHERE m.recipient_account = p_account AND m.recipient_device = p_device
               AND m.server_id = ANY (v_wanted)
               FOR UPDATE) AS locked;
    IF cardinality(v_found) <> cardinality(v_wanted) THEN
        outcome := 'unknown_message';
        removed := 0;
        SELECT array_agg(id ORDER BY id) INTO missing FROM unnest(v_wanted) AS id WHERE id <> ALL (v_found);
        RETURN;
    END IF;
    IF cardinality(v_found) > 0 THEN
        DELETE FROM messages m
         WHERE m.recipient_account = p_account AND m.recipient_device = p_device
           AND m.server_id = ANY (v_found);
        UPDATE queues q SET count = q.count - cardinality(v_found), bytes = q.bytes - v_bytes
         WHERE q.account = p_account AND q.device_id = p_device;
    END IF;
    outcome := 'ok';
    removed := cardinality(v_found);
END
$$;

-- A batch of acknowledgements, one per item: item i acknowledges the ids
-- p_ids[p_starts[i] .. p_starts[i] + p_lengths[i] - 1] for device i.  Sorted by device by the caller.
CREATE FUNCTION relay_ack_batch(
    p_accounts text[], p_devices bigint[], p_ids bigint[], p_starts integer[], p_lengths integer[]
) RETURNS TABLE (item integer, outcome text, removed bigint, missing bigint[]) LANGUAGE plpgsql AS $$
DECLARE
    i integer;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_accounts), 0) LOOP
        item := i;
        SELECT a.outcome, a.removed, a.missing INTO outcome, removed, missing
          FROM relay_ack(p_accounts[i], p_devices[i],
                         p_ids[p_starts[i] : p_starts[i] + p_lengths[i] - 1]) AS a;
        RETURN NEXT;
    END LOOP;
END
$$;
