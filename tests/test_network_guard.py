import socket
import urllib.request

import pytest
from conftest import NetworkAccessError


def test_reaching_the_internet_fails_loudly():
    with pytest.raises(NetworkAccessError, match="must not use the network"):
        urllib.request.urlopen("http://example.com", timeout=1)


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket()
    client.connect(server.getsockname())
    client.close()
    server.close()


def test_local_unix_sockets_are_allowed(tmp_path):
    path = str(tmp_path / "s")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    client.close()
    server.close()
