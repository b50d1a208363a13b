-- Schema version 2 of the relay's PostgreSQL store: a message that has expired is gone for its
-- recipient at once, not only after the next sweep deletes it.
--
-- * relay_enqueue (same signature, replaced): a queue at its cap first drops its own expired
--   messages, so that they do not count against the cap.
-- * relay_ack and relay_ack_batch gain a p_now argument (new overloads): an expired id is refused
--   as unknown_message, like one that was never there.  The version 1 overloads stay, so that a node
--   still running the previous release keeps working during a rolling upgrade.

CREATE OR REPLACE FUNCTION relay_enqueue(
    p_sender_account text, p_sender_device bigint,
    p_recipient_account text, p_recipient_device bigint,
    p_client_id text, p_type integer, p_body bytea, p_digest bytea,
    p_now double precision, p_ttl double precision, p_max_messages bigint, p_max_bytes bigint,
    OUT outcome text, OUT server_id bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_count  bigint;
    v_bytes  bigint;
    v_seen   sent_ids%ROWTYPE;
    v_oldest double precision;
    v_gone   bigint;
    v_size   bigint;
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
        -- Expired messages do not count.  The probe reads the oldest message only (messages expire
        -- in queue order unless the TTL was lowered; the sweep removes any that did not).  The
        -- queues row is locked, so the rows deleted here are this queue's alone to account for.
        SELECT m.expires_at INTO v_oldest FROM messages m
         WHERE m.recipient_account = p_recipient_account AND m.recipient_device = p_recipient_device
         ORDER BY m.server_id LIMIT 1;
        IF FOUND AND v_oldest <= p_now THEN
            WITH gone AS (
                DELETE FROM messages m
                 WHERE m.recipient_account = p_recipient_account
                   AND m.recipient_device = p_recipient_device
                   AND m.expires_at <= p_now
                RETURNING octet_length(m.body) AS size
            ) SELECT count(*), coalesce(sum(size), 0) INTO v_gone, v_size FROM gone;
            UPDATE queues q SET count = q.count - v_gone, bytes = q.bytes - v_size
             WHERE q.account = p_recipient_account AND q.device_id = p_recipient_device;
            v_count := v_count - v_gone;
            v_bytes := v_bytes - v_size;
        END IF;
        IF v_count + 1 > p_max_messages OR v_bytes + octet_length(p_body) > p_max_bytes THEN
            outcome := 'queue_full';
            RETURN;
        END IF;
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

-- Delete acknowledged messages from the acknowledging device's own queue, all or nothing: if any id
-- is not in that queue, or names a message expired by p_now, nothing is deleted and the missing ids
-- are returned.
CREATE FUNCTION relay_ack(
    p_account text, p_device bigint, p_server_ids bigint[], p_now double precision,
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
               AND m.server_id = ANY (v_wanted) AND m.expires_at > p_now
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
-- p_ids[p_starts[i] .. p_starts[i] + p_lengths[i] - 1] for device i at time p_now[i].  Sorted by
-- device by the caller.
CREATE FUNCTION relay_ack_batch(
    p_accounts text[], p_devices bigint[], p_ids bigint[], p_starts integer[], p_lengths integer[],
    p_now double precision[]
) RETURNS TABLE (item integer, outcome text, removed bigint, missing bigint[]) LANGUAGE plpgsql AS $$
DECLARE
    i integer;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_accounts), 0) LOOP
        item := i;
        SELECT a.outcome, a.removed, a.missing INTO outcome, removed, missing
          FROM relay_ack(p_accounts[i], p_devices[i],
                         p_ids[p_starts[i] : p_starts[i] + p_lengths[i] - 1], p_now[i]) AS a;
        RETURN NEXT;
    END LOOP;
END
$$;
