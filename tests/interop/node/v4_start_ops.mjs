// Version-4 session start for the libsignal peer (libsignal_peer.mjs): Kyber prekeys, bundles that
// libsignal makes or processes, PQXDH through libsignal's session API, and its log lines.
//
// Ops (arguments after the colon; results after the arrow; bytes as base64), all named v4start_*
// so that they cannot collide with the peer's other ops:
//   v4start_kyber_key_pair:                           -> {public_key (1569), secret_key (3169)}
//   v4start_bundle_create: party, signed_pre_key_id, kyber_pre_key_id, pre_key_id?
//       -> {registration_id, identity_key, signed_pre_key, signed_pre_key_signature, pre_key?,
//           kyber_pre_key, kyber_pre_key_signature, and the private halves: identity_private,
//           signed_pre_key_private, pre_key_private?, kyber_secret_key}
//       New keys made by libsignal, stored in the party's stores, published as a bundle.
//   v4start_process_bundle: party, address, local_address, bundle (the fields above, with
//       registration_id, device_id, signed_pre_key_id, kyber_pre_key_id, pre_key_id?)  -> {}
//   v4start_encrypt: party, address, local_address, plaintext  -> {type (2 or 3), body}
//   v4start_decrypt_prekey: party, address, local_address, message -> {plaintext}
//   v4start_record_export: party, address             -> {record} (null when there is none)
//   v4start_log_capture:                              -> {messages}: libsignal's log lines (warnings
//       and errors) since the previous call; the first call starts the capture.

export function v4StartOps({ lib, arg, bytesArg, b64, addressArg, partyArg, BadRequest }) {
  // libsignal's log lines, once v4start_log_capture has started the capture.
  let capturedLogs = null;

  function optionalBytes(request, name) {
    return request[name] === undefined || request[name] === null ? null : bytesArg(request, name);
  }

  return {
    v4start_kyber_key_pair: async () => {
      const pair = lib.KEMKeyPair.generate();
      return { public_key: b64(pair.getPublicKey().serialize()), secret_key: b64(pair.getSecretKey().serialize()) };
    },

    v4start_bundle_create: async (request) => {
      const party = partyArg(request);
      const signedId = arg(request, 'signed_pre_key_id', 'number');
      const kyberId = arg(request, 'kyber_pre_key_id', 'number');
      const timestamp = Date.now();
      const signed = lib.PrivateKey.generate();
      const signedSignature = party.identity.sign(signed.getPublicKey().serialize());
      await party.signedPreKeys.saveSignedPreKey(
        signedId,
        lib.SignedPreKeyRecord.new(signedId, timestamp, signed.getPublicKey(), signed, signedSignature),
      );
      const kyber = lib.KEMKeyPair.generate();
      const kyberSignature = party.identity.sign(kyber.getPublicKey().serialize());
      await party.kyberPreKeys.saveKyberPreKey(kyberId, lib.KyberPreKeyRecord.new(kyberId, timestamp, kyber, kyberSignature));
      const result = {
        registration_id: party.registrationId,
        identity_key: b64(party.identity.getPublicKey().serialize()),
        identity_private: b64(party.identity.serialize()),
        signed_pre_key: b64(signed.getPublicKey().serialize()),
        signed_pre_key_private: b64(signed.serialize()),
        signed_pre_key_signature: b64(signedSignature),
        kyber_pre_key: b64(kyber.getPublicKey().serialize()),
        kyber_secret_key: b64(kyber.getSecretKey().serialize()),
        kyber_pre_key_signature: b64(kyberSignature),
      };
      if (request.pre_key_id !== undefined && request.pre_key_id !== null) {
        const preKeyId = arg(request, 'pre_key_id', 'number');
        const preKey = lib.PrivateKey.generate();
        await party.preKeys.savePreKey(preKeyId, lib.PreKeyRecord.new(preKeyId, preKey.getPublicKey(), preKey));
        result.pre_key = b64(preKey.getPublicKey().serialize());
        result.pre_key_private = b64(preKey.serialize());
      }
      return result;
    },

    v4start_process_bundle: async (request) => {
      const party = partyArg(request);
      const bundle = request.bundle;
      if (bundle === null || typeof bundle !== 'object') {
        throw new BadRequest('argument bundle must be an object');
      }
      const preKey = optionalBytes(bundle, 'pre_key');
      const made = lib.PreKeyBundle.new(
        arg(bundle, 'registration_id', 'number'),
        arg(bundle, 'device_id', 'number'),
        preKey === null ? null : arg(bundle, 'pre_key_id', 'number'),
        preKey === null ? null : lib.PublicKey.deserialize(preKey),
        arg(bundle, 'signed_pre_key_id', 'number'),
        lib.PublicKey.deserialize(bytesArg(bundle, 'signed_pre_key')),
        bytesArg(bundle, 'signed_pre_key_signature'),
        lib.PublicKey.deserialize(bytesArg(bundle, 'identity_key')),
        arg(bundle, 'kyber_pre_key_id', 'number'),
        lib.KEMPublicKey.deserialize(bytesArg(bundle, 'kyber_pre_key')),
        bytesArg(bundle, 'kyber_pre_key_signature'),
      );
      await lib.processPreKeyBundle(
        made,
        addressArg(request, 'address'),
        addressArg(request, 'local_address'),
        party.sessions,
        party.identities,
      );
      return {};
    },

    v4start_encrypt: async (request) => {
      const party = partyArg(request);
      const message = await lib.signalEncrypt(
        bytesArg(request, 'plaintext'),
        addressArg(request, 'address'),
        addressArg(request, 'local_address'),
        party.sessions,
        party.identities,
      );
      return { type: message.type(), body: b64(message.serialize()) };
    },

    v4start_decrypt_prekey: async (request) => {
      const party = partyArg(request);
      const plaintext = await lib.signalDecryptPreKey(
        lib.PreKeySignalMessage.deserialize(bytesArg(request, 'message')),
        addressArg(request, 'address'),
        addressArg(request, 'local_address'),
        party.sessions,
        party.identities,
        party.preKeys,
        party.signedPreKeys,
        party.kyberPreKeys,
      );
      return { plaintext: b64(plaintext) };
    },

    v4start_log_capture: async () => {
      if (capturedLogs === null) {
        capturedLogs = [];
        lib.initLogger(lib.LogLevel.Warn, (level, target, file, line, message) => {
          capturedLogs.push(`${lib.LogLevel[level] ?? level} ${target}: ${message}`);
        });
      }
      const messages = capturedLogs.splice(0, capturedLogs.length);
      return { messages };
    },

    v4start_record_export: async (request) => {
      const party = partyArg(request);
      const record = await party.sessions.getSession(addressArg(request, 'address'));
      return { record: record === null ? null : b64(record.serialize()) };
    },
  };
}
