"""client.names: the client applies the relay's rules to names and URLs before it creates anything."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client import Client
from client.errors import InvalidInputError, InvalidNameError, InvalidRelayURLError
from client.names import check_account_name, check_device_id, check_relay_url
from server.protocol import ProtocolError, account_name


@pytest.mark.parametrize("name", ["alice", "bob.99", "a", "x@example.org", "a+b-c_d", "a" * 64])
def test_names_the_relay_accepts_pass(name: str) -> None:
    assert check_account_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "../../x y", ".", "..", "-alice", "a/b", "a b", "a" * 65, "ali\x1bce", "alíce", "a\udcff", "Alice"],
)
def test_names_the_relay_refuses_are_refused_first(name: str) -> None:
    with pytest.raises(InvalidNameError) as raised:
        check_account_name(name)
    assert "\x1b" not in str(raised.value)


@given(st.text(max_size=70))
def test_the_client_rule_is_the_relays_rule(name: str) -> None:
    try:
        account_name({"account": name})
        relay_accepts = True
    except ProtocolError:
        relay_accepts = False
    try:
        check_account_name(name)
        client_accepts = True
    except InvalidNameError:
        client_accepts = False
    assert client_accepts == relay_accepts


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8765",
        "127.0.0.1:8765",
        "ws://",
        "ws://host:99999",
        "ws://host:port",
        "ws://user:pw@host",
        "ws://host/?q=1",
        "ws://ho st",
        "ws://h\x1bst",
        "ws://host:0",
    ],
)
def test_bad_relay_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRelayURLError):
        check_relay_url(url)


@pytest.mark.parametrize("url", ["ws://127.0.0.1:8765", "wss://relay.example/e2e", "ws://[::1]:9"])
def test_relay_urls_pass(url: str) -> None:
    assert check_relay_url(url) == url


@pytest.mark.parametrize("device_id", [0, -1, 2**31, True, "1"])
def test_bad_device_ids_are_refused(device_id: object) -> None:
    with pytest.raises(InvalidInputError):
        check_device_id(device_id)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "name"), [("ws://127.0.0.1:1", "../../x y"), ("http://127.0.0.1:1", "alice")]
)
def test_client_create_refuses_before_it_makes_a_file(tmp_path, url: str, name: str) -> None:
    with pytest.raises(InvalidInputError):
        Client.create(tmp_path / "state" / "alice.db", url, name)
    with pytest.raises(InvalidInputError):
        Client.create(tmp_path / "alice.db", url, name)
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "x y").exists()


def test_client_open_of_a_missing_file_creates_nothing(tmp_path) -> None:
    from client.errors import NotRegisteredError

    with pytest.raises(NotRegisteredError):
        Client.open(tmp_path / "nobody.db", "ws://127.0.0.1:1")
    assert list(tmp_path.iterdir()) == []


def test_a_name_in_capitals_is_refused_with_its_lowercase_spelling() -> None:
    with pytest.raises(InvalidNameError, match="account names are lowercase: 'alice'"):
        check_account_name("Alice")
