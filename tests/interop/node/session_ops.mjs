// One-to-one session ops for the libsignal Node peer (libsignal_peer.mjs registers them): Kyber key
// pairs, prekey bundles that libsignal makes or processes, encrypting and decrypting v4 messages
// (the Triple Ratchet as libsignal 0.103 runs it), session records, and libsignal's log lines.
//
// Ops (arguments after the colon; results after the arrow; bytes as base64).  A party's own
// address is {name: its party name, device_id: 1}; `peer` is the address of the other side.
//   session_kyber_key_pair:                           -> {public_key (1569), secret_key (3169)}
//   session_bundle: party, signed_pre_key_id, kyber_pre_key_id, pre_key_id?
//       -> {registration_id, device_id, pre_key_id?, pre_key?, signed_pre_key_id, signed_pre_key,
//           signed_pre_key_signature, identity_key, kyber_pre_key_id, kyber_pre_key,
//           kyber_pre_key_signature, and the private halves: identity_private, pre_key_private?,
//           signed_pre_key_private, kyber_secret_key}
//       New keys made by libsignal, stored in the party's prekey stores, published as a bundle.
//   session_process_bundle: party, peer, bundle (the public fields above; pre_key_id and pre_key
//       together or not at all) -> {}   (libsignal's processPreKeyBundle)
//   session_encrypt: party, peer, plaintext -> {type (2 whisper, 3 prekey), body}
//   session_decrypt: party, peer, type, body -> {plaintext}
//   session_record_export: party, peer -> {record}   (libsignal's SessionRecord bytes, or null)
//   session_record_import: party, peer, record -> {}
//   session_import_prekeys: party, pre_key_id, pre_key_private, signed_pre_key_id,
//       signed_pre_key_private, signed_pre_key_signature, kyber_pre_key_id, kyber_record -> {}
//       (given keys, for vectors: EC private keys as 32-byte scalars, the Kyber prekey as
//       libsignal's record bytes)
//   session_bench_ping_pong: messages, size -> {cpu_ms}  (two fresh libsignal parties
//       inside the peer, a v4 session, `messages` messages of `size` bytes in strict ping-pong;
//       the CPU milliseconds of the encrypt and decrypt calls, setup excluded)
//   session_fingerprint: party, local_id, remote_id, remote_identity_key, iterations, version
//       -> {displayable, scannable}  (libsignal's Fingerprint of the party's identity key and the
//       remote one: the 60-digit safety number and the scannable bytes, as the party sees them)
//   session_log_capture:                              -> {messages}: libsignal's log lines (warnings
//       and errors) since the previous call; the first call starts the capture.  They name the
//       step that refused a message where the JS error says only "decryption failed".

export function sessionOps({ lib, arg, bytesArg, b64, addressArg, partyArg, PartyClass, BadRequest }) {
  const own = (request) => lib.ProtocolAddress.new(arg(request, 'party', 'string'), 1);
  const present = (request, name) => request[name] !== undefined && request[name] !== null;

  // libsignal's log lines, once session_log_capture has started the capture.
  let capturedLogs = null;

  return {
    session_kyber_key_pair: async () => {
      const pair = lib.KEMKeyPair.generate();
      return { public_key: b64(pair.getPublicKey().serialize()), secret_key: b64(pair.getSecretKey().serialize()) };
    },

    session_bundle: async (request) => {
      const party = partyArg(request);
      const signedPreKeyId = arg(request, 'signed_pre_key_id', 'number');
      const kyberPreKeyId = arg(request, 'kyber_pre_key_id', 'number');
      const now = Date.now();
      const signedPreKey = lib.PrivateKey.generate();
      const signedSignature = party.identity.sign(signedPreKey.getPublicKey().serialize());
      await party.signedPreKeys.saveSignedPreKey(
        signedPreKeyId,
        lib.SignedPreKeyRecord.new(signedPreKeyId, now, signedPreKey.getPublicKey(), signedPreKey, signedSignature),
      );
      const kyber = lib.KEMKeyPair.generate();
      const kyberSignature = party.identity.sign(kyber.getPublicKey().serialize());
      await party.kyberPreKeys.saveKyberPreKey(
        kyberPreKeyId,
        lib.KyberPreKeyRecord.new(kyberPreKeyId, now, kyber, kyberSignature),
      );
      const result = {
        registration_id: party.registrationId,
        device_id: 1,
        signed_pre_key_id: signedPreKeyId,
        signed_pre_key: b64(signedPreKey.getPublicKey().serialize()),
        signed_pre_key_private: b64(signedPreKey.serialize()),
        signed_pre_key_signature: b64(signedSignature),
        identity_key: b64(party.identity.getPublicKey().serialize()),
        identity_private: b64(party.identity.serialize()),
        kyber_pre_key_id: kyberPreKeyId,
        kyber_pre_key: b64(kyber.getPublicKey().serialize()),
        kyber_secret_key: b64(kyber.getSecretKey().serialize()),
        kyber_pre_key_signature: b64(kyberSignature),
      };
      if (present(request, 'pre_key_id')) {
        const preKeyId = arg(request, 'pre_key_id', 'number');
        const preKey = lib.PrivateKey.generate();
        await party.preKeys.savePreKey(preKeyId, lib.PreKeyRecord.new(preKeyId, preKey.getPublicKey(), preKey));
        result.pre_key_id = preKeyId;
        result.pre_key = b64(preKey.getPublicKey().serialize());
        result.pre_key_private = b64(preKey.serialize());
      }
      return result;
    },

    session_process_bundle: async (request) => {
      const party = partyArg(request);
      const b = request.bundle;
      if (b === null || typeof b !== 'object') {
        throw new BadRequest('argument bundle must be an object');
      }
      if (present(b, 'pre_key') !== present(b, 'pre_key_id')) {
        throw new BadRequest('a bundle has pre_key_id and pre_key together or neither');
      }
      const withPreKey = present(b, 'pre_key');
      const bundle = lib.PreKeyBundle.new(
        arg(b, 'registration_id', 'number'),
        arg(b, 'device_id', 'number'),
        withPreKey ? arg(b, 'pre_key_id', 'number') : null,
        withPreKey ? lib.PublicKey.deserialize(bytesArg(b, 'pre_key')) : null,
        arg(b, 'signed_pre_key_id', 'number'),
        lib.PublicKey.deserialize(bytesArg(b, 'signed_pre_key')),
        bytesArg(b, 'signed_pre_key_signature'),
        lib.PublicKey.deserialize(bytesArg(b, 'identity_key')),
        arg(b, 'kyber_pre_key_id', 'number'),
        lib.KEMPublicKey.deserialize(bytesArg(b, 'kyber_pre_key')),
        bytesArg(b, 'kyber_pre_key_signature'),
      );
      await lib.processPreKeyBundle(bundle, addressArg(request, 'peer'), own(request), party.sessions, party.identities);
      return {};
    },

    session_encrypt: async (request) => {
      const party = partyArg(request);
      const message = await lib.signalEncrypt(
        bytesArg(request, 'plaintext'),
        addressArg(request, 'peer'),
        own(request),
        party.sessions,
        party.identities,
      );
      return { type: message.type(), body: b64(message.serialize()) };
    },

    session_decrypt: async (request) => {
      const party = partyArg(request);
      const body = bytesArg(request, 'body');
      const peer = addressArg(request, 'peer');
      const type = arg(request, 'type', 'number');
      let plaintext;
      if (type === lib.CiphertextMessageType.PreKey) {
        plaintext = await lib.signalDecryptPreKey(
          lib.PreKeySignalMessage.deserialize(body),
          peer,
          own(request),
          party.sessions,
          party.identities,
          party.preKeys,
          party.signedPreKeys,
          party.kyberPreKeys,
        );
      } else {
        plaintext = await lib.signalDecrypt(lib.SignalMessage.deserialize(body), peer, own(request), party.sessions, party.identities);
      }
      return { plaintext: b64(plaintext) };
    },

    session_fingerprint: async (request) => {
      const party = partyArg(request);
      const fingerprint = lib.Fingerprint.new(
        arg(request, 'iterations', 'number'),
        arg(request, 'version', 'number'),
        bytesArg(request, 'local_id'),
        party.identity.getPublicKey(),
        bytesArg(request, 'remote_id'),
        lib.PublicKey.deserialize(bytesArg(request, 'remote_identity_key')),
      );
      return {
        displayable: fingerprint.displayableFingerprint().toString(),
        scannable: b64(fingerprint.scannableFingerprint().toBuffer()),
      };
    },

    session_import_prekeys: async (request) => {
      const party = partyArg(request);
      const preKeyId = arg(request, 'pre_key_id', 'number');
      const preKey = lib.PrivateKey.deserialize(bytesArg(request, 'pre_key_private'));
      await party.preKeys.savePreKey(preKeyId, lib.PreKeyRecord.new(preKeyId, preKey.getPublicKey(), preKey));
      const signedPreKeyId = arg(request, 'signed_pre_key_id', 'number');
      const signedPreKey = lib.PrivateKey.deserialize(bytesArg(request, 'signed_pre_key_private'));
      await party.signedPreKeys.saveSignedPreKey(
        signedPreKeyId,
        lib.SignedPreKeyRecord.new(
          signedPreKeyId,
          0,
          signedPreKey.getPublicKey(),
          signedPreKey,
          bytesArg(request, 'signed_pre_key_signature'),
        ),
      );
      const kyberPreKeyId = arg(request, 'kyber_pre_key_id', 'number');
      await party.kyberPreKeys.saveKyberPreKey(kyberPreKeyId, lib.KyberPreKeyRecord.deserialize(bytesArg(request, 'kyber_record')));
      return {};
    },

    session_bench_ping_pong: async (request) => {
      const messages = arg(request, 'messages', 'number');
      const size = arg(request, 'size', 'number');
      const ops = sessionOps({ lib, arg, bytesArg, b64, addressArg, partyArg: (r) => r.partyObject, PartyClass, BadRequest });
      const alice = new PartyClass(lib.PrivateKey.generate(), 1);
      const bob = new PartyClass(lib.PrivateKey.generate(), 2);
      const aliceAddress = lib.ProtocolAddress.new('bench-alice', 1);
      const bobAddress = lib.ProtocolAddress.new('bench-bob', 1);
      const bundle = await ops.session_bundle({
        party: 'bench-bob', partyObject: bob, pre_key_id: 1, signed_pre_key_id: 2, kyber_pre_key_id: 3,
      });
      await ops.session_process_bundle({ party: 'bench-alice', partyObject: alice, peer: { name: 'bench-bob', device_id: 1 }, bundle });
      const plaintext = new Uint8Array(size);
      // The first exchange (PreKey message and reply) is setup, not measured.
      let message = await lib.signalEncrypt(plaintext, bobAddress, aliceAddress, alice.sessions, alice.identities);
      await lib.signalDecryptPreKey(
        lib.PreKeySignalMessage.deserialize(message.serialize()), aliceAddress, bobAddress, bob.sessions, bob.identities,
        bob.preKeys, bob.signedPreKeys, bob.kyberPreKeys,
      );
      message = await lib.signalEncrypt(plaintext, aliceAddress, bobAddress, bob.sessions, bob.identities);
      await lib.signalDecrypt(lib.SignalMessage.deserialize(message.serialize()), bobAddress, aliceAddress, alice.sessions, alice.identities);
      const start = process.cpuUsage();
      for (let i = 0; i < messages / 2; i++) {
        message = await lib.signalEncrypt(plaintext, bobAddress, aliceAddress, alice.sessions, alice.identities);
        await lib.signalDecrypt(lib.SignalMessage.deserialize(message.serialize()), aliceAddress, bobAddress, bob.sessions, bob.identities);
        message = await lib.signalEncrypt(plaintext, aliceAddress, bobAddress, bob.sessions, bob.identities);
        await lib.signalDecrypt(lib.SignalMessage.deserialize(message.serialize()), bobAddress, aliceAddress, alice.sessions, alice.identities);
      }
      const used = process.cpuUsage(start);
      return { cpu_ms: (used.user + used.system) / 1000 };
    },

    session_record_export: async (request) => {
      const party = partyArg(request);
      const record = await party.sessions.getSession(addressArg(request, 'peer'));
      return { record: record === null ? null : b64(record.serialize()) };
    },

    session_record_import: async (request) => {
      const party = partyArg(request);
      await party.sessions.saveSession(addressArg(request, 'peer'), lib.SessionRecord.deserialize(bytesArg(request, 'record')));
      return {};
    },

    session_log_capture: async () => {
      if (capturedLogs === null) {
        capturedLogs = [];
        lib.initLogger(lib.LogLevel.Warn, (level, target, file, line, message) => {
          capturedLogs.push(`${lib.LogLevel[level] ?? level} ${target}: ${message}`);
        });
      }
      const messages = capturedLogs.splice(0, capturedLogs.length);
      return { messages };
    },
  };
}
