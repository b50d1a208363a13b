// One-to-one session ops for the libsignal Node peer (libsignal_peer.mjs registers them): prekey
// bundles with a Kyber prekey, processing a bundle, and encrypting and decrypting v4 messages, the
// Triple Ratchet as libsignal 0.103 runs it.
//
// Ops (a party's own address is {name: its party name, device_id: 1}; `peer` is an address):
//   session_bundle: party, pre_key_id, signed_pre_key_id, kyber_pre_key_id
//       -> {registration_id, device_id, pre_key_id, pre_key, signed_pre_key_id, signed_pre_key,
//           signed_pre_key_signature, identity_key, kyber_pre_key_id, kyber_pre_key,
//           kyber_pre_key_signature}  (new keys, stored in the party's prekey stores)
//   session_process_bundle: party, peer, bundle (the fields above) -> {}
//   session_encrypt: party, peer, plaintext -> {type (2 whisper, 3 prekey), body}
//   session_decrypt: party, peer, type, body -> {plaintext}
//   session_record_export: party, peer -> {record}   (libsignal's SessionRecord bytes, or null)
//   session_record_import: party, peer, record -> {}
//   session_bench_ping_pong: messages, size -> {cpu_ms}  (two fresh libsignal parties
//       inside the peer, a v4 session, `messages` messages of `size` bytes in strict ping-pong;
//       the CPU milliseconds of the encrypt and decrypt calls, setup excluded)
//   session_fingerprint: party, local_id, remote_id, remote_identity_key, iterations, version
//       -> {displayable, scannable}  (libsignal's Fingerprint of the party's identity key and the
//       remote one: the 60-digit safety number and the scannable bytes, as the party sees them)
//   session_import_prekeys: party, pre_key_id, pre_key_private, signed_pre_key_id,
//       signed_pre_key_private, signed_pre_key_signature, kyber_pre_key_id, kyber_record -> {}
//       (given keys, for vectors: EC private keys as 32-byte scalars, the Kyber prekey as
//       libsignal's record bytes)

export function sessionOps({ lib, arg, bytesArg, b64, addressArg, partyArg, PartyClass }) {
  const own = (request) => lib.ProtocolAddress.new(arg(request, 'party', 'string'), 1);

  return {
    session_bundle: async (request) => {
      const party = partyArg(request);
      const preKeyId = arg(request, 'pre_key_id', 'number');
      const signedPreKeyId = arg(request, 'signed_pre_key_id', 'number');
      const kyberPreKeyId = arg(request, 'kyber_pre_key_id', 'number');
      const preKey = lib.PrivateKey.generate();
      const signedPreKey = lib.PrivateKey.generate();
      const signedSignature = party.identity.sign(signedPreKey.getPublicKey().serialize());
      const kyber = lib.KEMKeyPair.generate();
      const kyberSignature = party.identity.sign(kyber.getPublicKey().serialize());
      const now = Date.now();
      await party.preKeys.savePreKey(preKeyId, lib.PreKeyRecord.new(preKeyId, preKey.getPublicKey(), preKey));
      await party.signedPreKeys.saveSignedPreKey(
        signedPreKeyId,
        lib.SignedPreKeyRecord.new(signedPreKeyId, now, signedPreKey.getPublicKey(), signedPreKey, signedSignature),
      );
      await party.kyberPreKeys.saveKyberPreKey(
        kyberPreKeyId,
        lib.KyberPreKeyRecord.new(kyberPreKeyId, now, kyber, kyberSignature),
      );
      return {
        registration_id: party.registrationId,
        device_id: 1,
        pre_key_id: preKeyId,
        pre_key: b64(preKey.getPublicKey().serialize()),
        signed_pre_key_id: signedPreKeyId,
        signed_pre_key: b64(signedPreKey.getPublicKey().serialize()),
        signed_pre_key_signature: b64(signedSignature),
        identity_key: b64(party.identity.getPublicKey().serialize()),
        kyber_pre_key_id: kyberPreKeyId,
        kyber_pre_key: b64(kyber.getPublicKey().serialize()),
        kyber_pre_key_signature: b64(kyberSignature),
      };
    },

    session_process_bundle: async (request) => {
      const party = partyArg(request);
      const b = request.bundle;
      if (b === null || typeof b !== 'object') {
        throw new TypeError('argument bundle must be an object');
      }
      const bundle = lib.PreKeyBundle.new(
        arg(b, 'registration_id', 'number'),
        arg(b, 'device_id', 'number'),
        b.pre_key_id ?? null,
        b.pre_key ? lib.PublicKey.deserialize(bytesArg(b, 'pre_key')) : null,
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
      const ops = sessionOps({ lib, arg, bytesArg, b64, addressArg, partyArg: (r) => r.partyObject, PartyClass });
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
  };
}
