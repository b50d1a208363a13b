from client.transport import IncomingMessage
from tests.relay.conftest import Device, drain


async def test_register_send_receive(relay, rng):
    alice = Device("alice", 1, rng)
    bob = Device("bob", 1, rng)
    a = await alice.register(relay.url)
    b = await bob.register(relay.url)
    await bob.publish(b, one_time=3)
    await b.close()
    bundle = await a.fetch_bundle("bob", 1)
    bundle.verify()
    assert bundle.pre_key_id == 1
    server_id = await a.send("bob", 1, "m1", 3, b"ciphertext")
    b = await bob.connect(relay.url)
    got = await drain(b)
    assert [m.body for m in got] == [b"ciphertext"]
    assert isinstance(got[0], IncomingMessage) and got[0].server_id == server_id
    await a.close()
    await b.close()
