// A peer for the interop tests: libsignal as Signal ships it (@signalapp/libsignal-client), driven
// over standard input and output by tests/interop/node_peer.py.
//
// Usage: node libsignal_peer.mjs NODE_MODULES_DIR
//
// Protocol: one JSON object per line each way.  A request is {"id": N, "op": NAME, ...arguments};
// the answer to it is {"id": N, "ok": true, "result": {...}} or
// {"id": N, "ok": false, "error": {"name": ..., "code": ..., "message": ...}}, where code is
// libsignal's ErrorCode name (for example "DuplicatedMessage", "InvalidMessage") when libsignal
// raised the error and null otherwise.  Requests are answered one at a time, in order.  Byte
// strings travel as base64.  A peer address is {"name": STRING, "device_id": INT}.  A line that is
// not a JSON object, or an unknown op, is answered with an error (id null if it had none); the peer
// keeps running until its input closes or it gets {"op": "shutdown"}.
//
// State: the peer holds named parties.  A party is one device of libsignal with its identity key
// pair, registration id and in-memory stores (sessions, identities, prekeys, signed prekeys, Kyber
// prekeys, sender keys), each keeping libsignal's serialized records, so that anything libsignal
// stores can be exported and compared.
//
// Ops (arguments after the colon; results after the arrow):
//   version:                                          -> {libsignal, node}
//   create_identity: party, registration_id?, identity_private_key? (32-byte scalar, base64)
//                                                     -> {identity_key (33 bytes), registration_id}
//   sender_key_distribution_create: party, sender (address), distribution_id (UUID string)
//                                                     -> {message}
//       libsignal's SenderKeyDistributionMessage.create: makes a sender key for (sender,
//       distribution) in the party's sender-key store if there is none, and returns its
//       distribution message.
//   sender_key_distribution_process: party, sender, message
//                                                     -> {distribution_id, chain_id, iteration}
//   sender_key_distribution_inspect: message        -> {distribution_id, chain_id, iteration, chain_key}
//   sender_key_distribution_new: distribution_id, chain_id, iteration, chain_key, signing_key (33 bytes)
//                                                     -> {message}  (libsignal's own encoder)
//   group_encrypt: party, sender, distribution_id, plaintext -> {message}
//   group_decrypt: party, sender, message            -> {plaintext}
//   sender_key_message_inspect: message, signing_key?
//                                  -> {distribution_id, chain_id, iteration, ciphertext, signature_valid?}
//   sender_key_record_export: party, sender, distribution_id -> {record} (null when there is none)
//   sender_key_record_import: party, sender, distribution_id, record -> {}
//   sender_key_record_delete: party, sender, distribution_id -> {deleted: bool}
//       What a client does to rotate its own sender key: the next
//       sender_key_distribution_create then makes a new chain.
//   cpu_time:                                         -> {seconds} (this process's user + system CPU)
//   bench_group_encrypt: party, sender, distribution_id, plaintext, count
//                                                     -> {} after count group_encrypt calls, for
//       benchmarks/core_bench.py, which reads cpu_time around it
//   shutdown:                                         -> {} and the peer exits
//   session_*: one-to-one v4 sessions (Kyber key pairs, bundles libsignal makes or processes,
//       encrypt, decrypt, session records, prekeys given for vectors, a ping-pong benchmark,
//       libsignal's log lines); see session_ops.mjs
//
// New ops are added to the OPS table at the bottom; each gets the request object and returns (a
// promise of) its result object.

import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { sessionOps } from './session_ops.mjs';

const modulesDir = process.argv[2];
if (!modulesDir) {
  process.stderr.write('usage: node libsignal_peer.mjs NODE_MODULES_DIR\n');
  process.exit(2);
}
const requireFromModules = createRequire(path.join(path.resolve(modulesDir), 'peer.js'));
const lib = requireFromModules('@signalapp/libsignal-client');
const libVersion = requireFromModules('@signalapp/libsignal-client/package.json').version;

// A request argument that is missing or of the wrong type is the driver's mistake, reported as such.
class BadRequest extends Error {}

function arg(request, name, type) {
  const value = request[name];
  if (typeof value !== type) {
    throw new BadRequest(`argument ${name} must be a ${type}`);
  }
  return value;
}

function bytesArg(request, name) {
  const value = arg(request, name, 'string');
  return new Uint8Array(Buffer.from(value, 'base64'));
}

function b64(bytes) {
  return Buffer.from(bytes).toString('base64');
}

function addressArg(request, name) {
  const value = request[name];
  if (value === null || typeof value !== 'object') {
    throw new BadRequest(`argument ${name} must be an address {name, device_id}`);
  }
  return lib.ProtocolAddress.new(arg(value, 'name', 'string'), arg(value, 'device_id', 'number'));
}

function addressKey(address) {
  return `${address.name()}.${address.deviceId()}`;
}

class MemorySenderKeyStore extends lib.SenderKeyStore {
  constructor() {
    super();
    this.records = new Map();
  }
  async saveSenderKey(sender, distributionId, record) {
    this.records.set(`${addressKey(sender)}/${distributionId}`, record.serialize());
  }
  async getSenderKey(sender, distributionId) {
    const bytes = this.records.get(`${addressKey(sender)}/${distributionId}`);
    return bytes === undefined ? null : lib.SenderKeyRecord.deserialize(bytes);
  }
}

class MemorySessionStore extends lib.SessionStore {
  constructor() {
    super();
    this.records = new Map();
  }
  async saveSession(address, record) {
    this.records.set(addressKey(address), record.serialize());
  }
  async getSession(address) {
    const bytes = this.records.get(addressKey(address));
    return bytes === undefined ? null : lib.SessionRecord.deserialize(bytes);
  }
  async getExistingSessions(addresses) {
    return Promise.all(addresses.map((address) => this.getSession(address)));
  }
}

class MemoryIdentityKeyStore extends lib.IdentityKeyStore {
  constructor(privateKey, registrationId) {
    super();
    this.privateKey = privateKey;
    this.registrationId = registrationId;
    this.identities = new Map();
  }
  async getIdentityKey() {
    return this.privateKey;
  }
  async getLocalRegistrationId() {
    return this.registrationId;
  }
  async saveIdentity(address, key) {
    const known = this.identities.get(addressKey(address));
    this.identities.set(addressKey(address), key.serialize());
    const replaced = known !== undefined && Buffer.compare(Buffer.from(known), Buffer.from(key.serialize())) !== 0;
    return replaced ? lib.IdentityChange.ReplacedExisting : lib.IdentityChange.NewOrUnchanged;
  }
  async isTrustedIdentity(address, key) {
    // Trust on first use, as the project's own client does: a changed key is not trusted.
    const known = this.identities.get(addressKey(address));
    return known === undefined || Buffer.compare(Buffer.from(known), Buffer.from(key.serialize())) === 0;
  }
  async getIdentity(address) {
    const known = this.identities.get(addressKey(address));
    return known === undefined ? null : lib.PublicKey.deserialize(known);
  }
}

// One store class for the three prekey kinds: records by id, serialized.
function memoryRecordStore(Base, RecordType, methods) {
  const Store = class extends Base {
    constructor() {
      super();
      this.records = new Map();
    }
  };
  Store.prototype[methods.save] = async function save(id, record) {
    this.records.set(id, record.serialize());
  };
  Store.prototype[methods.get] = async function get(id) {
    const bytes = this.records.get(id);
    if (bytes === undefined) {
      throw new Error(`no ${RecordType.name} with id ${id}`);
    }
    return RecordType.deserialize(bytes);
  };
  if (methods.remove) {
    Store.prototype[methods.remove] = async function remove(id) {
      this.records.delete(id);
    };
  }
  return Store;
}

const MemoryPreKeyStore = memoryRecordStore(lib.PreKeyStore, lib.PreKeyRecord, {
  save: 'savePreKey',
  get: 'getPreKey',
  remove: 'removePreKey',
});
const MemorySignedPreKeyStore = memoryRecordStore(lib.SignedPreKeyStore, lib.SignedPreKeyRecord, {
  save: 'saveSignedPreKey',
  get: 'getSignedPreKey',
});
const MemoryKyberPreKeyStore = memoryRecordStore(lib.KyberPreKeyStore, lib.KyberPreKeyRecord, {
  save: 'saveKyberPreKey',
  get: 'getKyberPreKey',
});
MemoryKyberPreKeyStore.prototype.markKyberPreKeyUsed = async function markUsed() {
  // One-time Kyber prekeys would be removed here; the tests keep them all.
};

class Party {
  constructor(privateKey, registrationId) {
    this.identity = privateKey;
    this.registrationId = registrationId;
    this.identities = new MemoryIdentityKeyStore(privateKey, registrationId);
    this.sessions = new MemorySessionStore();
    this.preKeys = new MemoryPreKeyStore();
    this.signedPreKeys = new MemorySignedPreKeyStore();
    this.kyberPreKeys = new MemoryKyberPreKeyStore();
    this.senderKeys = new MemorySenderKeyStore();
  }
}

const parties = new Map();

function partyArg(request) {
  const name = arg(request, 'party', 'string');
  const party = parties.get(name);
  if (party === undefined) {
    throw new BadRequest(`no party named ${name}`);
  }
  return party;
}

function distributionArg(request) {
  return arg(request, 'distribution_id', 'string');
}

const OPS = {
  version: async () => ({ libsignal: libVersion, node: process.version }),

  create_identity: async (request) => {
    const name = arg(request, 'party', 'string');
    if (parties.has(name)) {
      throw new BadRequest(`party ${name} exists`);
    }
    const privateKey =
      request.identity_private_key === undefined
        ? lib.PrivateKey.generate()
        : lib.PrivateKey.deserialize(bytesArg(request, 'identity_private_key'));
    const registrationId = request.registration_id === undefined ? 1 : arg(request, 'registration_id', 'number');
    parties.set(name, new Party(privateKey, registrationId));
    return { identity_key: b64(privateKey.getPublicKey().serialize()), registration_id: registrationId };
  },

  sender_key_distribution_create: async (request) => {
    const party = partyArg(request);
    const message = await lib.SenderKeyDistributionMessage.create(
      addressArg(request, 'sender'),
      distributionArg(request),
      party.senderKeys,
    );
    return { message: b64(message.serialize()) };
  },

  sender_key_distribution_process: async (request) => {
    const party = partyArg(request);
    const message = lib.SenderKeyDistributionMessage.deserialize(bytesArg(request, 'message'));
    await lib.processSenderKeyDistributionMessage(addressArg(request, 'sender'), message, party.senderKeys);
    return {
      distribution_id: message.distributionId(),
      chain_id: message.chainId(),
      iteration: message.iteration(),
    };
  },

  sender_key_distribution_inspect: async (request) => {
    const message = lib.SenderKeyDistributionMessage.deserialize(bytesArg(request, 'message'));
    return {
      distribution_id: message.distributionId(),
      chain_id: message.chainId(),
      iteration: message.iteration(),
      chain_key: b64(message.chainKey()),
    };
  },

  sender_key_distribution_new: async (request) => {
    const message = lib.SenderKeyDistributionMessage._new(
      3,
      distributionArg(request),
      arg(request, 'chain_id', 'number'),
      arg(request, 'iteration', 'number'),
      bytesArg(request, 'chain_key'),
      lib.PublicKey.deserialize(bytesArg(request, 'signing_key')),
    );
    return { message: b64(message.serialize()) };
  },

  group_encrypt: async (request) => {
    const party = partyArg(request);
    const message = await lib.groupEncrypt(
      addressArg(request, 'sender'),
      distributionArg(request),
      party.senderKeys,
      bytesArg(request, 'plaintext'),
    );
    return { message: b64(message.serialize()) };
  },

  group_decrypt: async (request) => {
    const party = partyArg(request);
    const plaintext = await lib.groupDecrypt(addressArg(request, 'sender'), party.senderKeys, bytesArg(request, 'message'));
    return { plaintext: b64(plaintext) };
  },

  sender_key_message_inspect: async (request) => {
    const message = lib.SenderKeyMessage.deserialize(bytesArg(request, 'message'));
    const result = {
      distribution_id: message.distributionId(),
      chain_id: message.chainId(),
      iteration: message.iteration(),
      ciphertext: b64(message.ciphertext()),
    };
    if (request.signing_key !== undefined) {
      result.signature_valid = message.verifySignature(lib.PublicKey.deserialize(bytesArg(request, 'signing_key')));
    }
    return result;
  },

  sender_key_record_export: async (request) => {
    const party = partyArg(request);
    const record = await party.senderKeys.getSenderKey(addressArg(request, 'sender'), distributionArg(request));
    return { record: record === null ? null : b64(record.serialize()) };
  },

  sender_key_record_import: async (request) => {
    const party = partyArg(request);
    const record = lib.SenderKeyRecord.deserialize(bytesArg(request, 'record'));
    await party.senderKeys.saveSenderKey(addressArg(request, 'sender'), distributionArg(request), record);
    return {};
  },

  sender_key_record_delete: async (request) => {
    const party = partyArg(request);
    const key = `${addressKey(addressArg(request, 'sender'))}/${distributionArg(request)}`;
    return { deleted: party.senderKeys.records.delete(key) };
  },

  cpu_time: async () => {
    const usage = process.cpuUsage();
    return { seconds: (usage.user + usage.system) / 1e6 };
  },

  bench_group_encrypt: async (request) => {
    const party = partyArg(request);
    const sender = addressArg(request, 'sender');
    const distributionId = distributionArg(request);
    const plaintext = bytesArg(request, 'plaintext');
    const count = arg(request, 'count', 'number');
    for (let i = 0; i < count; i += 1) {
      await lib.groupEncrypt(sender, distributionId, party.senderKeys, plaintext);
    }
    return {};
  },

  shutdown: async () => ({}),
};

// The one-to-one session ops of session_ops.mjs; a name defined twice stops the peer at start.
for (const [name, op] of Object.entries(sessionOps({ lib, arg, bytesArg, b64, addressArg, partyArg, PartyClass: Party, BadRequest }))) {
  if (Object.hasOwn(OPS, name)) {
    throw new Error(`op ${name} is defined twice`);
  }
  OPS[name] = op;
}

function errorAnswer(id, error) {
  const code = error instanceof lib.LibSignalErrorBase ? (lib.ErrorCode[error.code] ?? String(error.code)) : null;
  const name = error instanceof BadRequest ? 'BadRequest' : (error?.name ?? 'Error');
  return { id, ok: false, error: { name, code, message: String(error?.message ?? error) } };
}

function send(answer) {
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === '') {
    continue;
  }
  let request;
  try {
    request = JSON.parse(line);
  } catch (error) {
    send(errorAnswer(null, new BadRequest(`not JSON: ${error.message}`)));
    continue;
  }
  if (request === null || typeof request !== 'object' || Array.isArray(request)) {
    send(errorAnswer(null, new BadRequest('a request must be a JSON object')));
    continue;
  }
  const id = request.id ?? null;
  const op = Object.hasOwn(OPS, request.op) ? OPS[request.op] : undefined;
  if (op === undefined) {
    send(errorAnswer(id, new BadRequest(`unknown op ${JSON.stringify(request.op)}`)));
    continue;
  }
  try {
    send({ id, ok: true, result: await op(request) });
  } catch (error) {
    send(errorAnswer(id, error));
  }
  if (request.op === 'shutdown') {
    break;
  }
}
process.exit(0);
