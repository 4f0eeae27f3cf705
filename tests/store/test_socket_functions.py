"""pysyncobj's `win_inet_pton` module, imported by its TCP connection on every OS,
replaces `socket.inet_ntop` with a Windows-only stand-in that raises on Linux. A
manager process imports the store and also runs the overlay data plane, whose netlink
library (pyroute2) decodes every address with `socket.inet_ntop`: the store must leave
the socket module as it found it."""
import socket


def test_the_store_leaves_inet_ntop_working():
    import swarmlet.store  # noqa: F401 -- imports pysyncobj
    import pysyncobj.tcp_connection  # noqa: F401 -- the module that imports win_inet_pton

    assert socket.inet_ntop(socket.AF_INET, bytes([10, 0, 1, 251])) == "10.0.1.251"
    assert socket.inet_ntop(socket.AF_INET6, bytes(15) + b"\x01") == "::1"
    assert socket.inet_pton(socket.AF_INET, "10.0.1.251") == bytes([10, 0, 1, 251])
