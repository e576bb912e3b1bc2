import socket

from bench.local_ports import free_port


def test_ports_are_never_handed_out_twice_and_are_free_when_handed_out():
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
