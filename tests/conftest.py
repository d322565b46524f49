"""Shared fixtures: every test is offline, seeded, and can run on each available device."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # figures are drawn off screen; this does not import pyplot

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test workers share the cores; a thread pool of 2 in each would oversubscribe them
    # (transforms ran 7x slower that way).
    torch.set_num_threads(1)

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.gpu),
]


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Run a test once per device: the CPU always, CUDA where present (marked ``gpu``)."""
    return torch.device(request.param)


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return True  # unix sockets and the like
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: that would be the network


class NetworkAccessError(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to reach a non-loopback address fails the test loudly."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guard(address):
        if not _is_loopback(address):
            raise NetworkAccessError(f"tests must not use the network (tried to reach {address})")

    def connect(self, address):
        if self.family != socket.AF_UNIX:  # DataLoader workers talk over local unix sockets
            guard(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family != socket.AF_UNIX:
            guard(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        guard((host,))
        return real_getaddrinfo(host, *args, **kwargs)

    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every figure a test drew; a test that never imported pyplot is left without it."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
