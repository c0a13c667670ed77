"""cni.netlink: message encoding (pure) and the real kernel's answers,
including errors that name the object (in private network namespaces)."""
from __future__ import annotations

import errno
import os
import socket
import struct
import uuid

import pytest

from cni import dataplane, netlink
from cni.errors import CHECK_FAILED, DATAPLANE_ERROR, CNIError
from cni.netlink import Netlink, NetlinkError
from cni.netns import run_in_netns
from tests.support.netns import Netns, cali_links


def _attrs_list(data: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset < len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        out.append((kind, data[offset + 4: offset + length]))
        offset += (length + 3) & ~3
    return out


# -- encoding -----------------------------------------------------------------------


def test_attr_is_padded_to_four_bytes_with_the_unpadded_length() -> None:
    a = netlink.attr_str(netlink.IFLA_IFNAME, "eth0")
    assert len(a) == 12
    assert struct.unpack_from("=HH", a) == (9, netlink.IFLA_IFNAME)
    assert a[4:9] == b"eth0\0" and a[9:] == b"\0\0\0"
    assert netlink.parse_attrs(a + netlink.attr_u32(netlink.IFLA_MTU, 1450)) == {
        netlink.IFLA_IFNAME: b"eth0\0", netlink.IFLA_MTU: struct.pack("=I", 1450)}


def test_message_header() -> None:
    body = netlink.ifinfomsg(7)
    msg = netlink.message(netlink.RTM_GETLINK, netlink.NLM_F_REQUEST, 42, body)
    assert struct.unpack_from("=IHHII", msg) == (16 + 16, netlink.RTM_GETLINK, netlink.NLM_F_REQUEST, 42, 0)
    assert netlink.parse_messages(msg + msg) == [(netlink.RTM_GETLINK, netlink.NLM_F_REQUEST, 42, body)] * 2


def test_veth_request_nests_the_peer_with_its_netns_fd() -> None:
    body = netlink.veth_request("cali1", "eth0", peer_netns_fd=9, mac="ee:ee:ee:ee:ee:ee", mtu=1450, peer_mtu=1400)
    assert body[:16] == netlink.ifinfomsg()
    top = dict(_attrs_list(body[16:]))
    assert top[netlink.IFLA_IFNAME] == b"cali1\0"
    assert top[netlink.IFLA_ADDRESS] == b"\xee" * 6
    assert top[netlink.IFLA_MTU] == struct.pack("=I", 1450)
    linkinfo = dict(_attrs_list(top[netlink.IFLA_LINKINFO | netlink.NLA_F_NESTED]))
    assert linkinfo[netlink.IFLA_INFO_KIND] == b"veth"
    data = dict(_attrs_list(linkinfo[netlink.IFLA_INFO_DATA | netlink.NLA_F_NESTED]))
    peer = data[netlink.VETH_INFO_PEER | netlink.NLA_F_NESTED]
    assert peer[:16] == netlink.ifinfomsg()
    assert netlink.parse_attrs(peer, 16) == {
        netlink.IFLA_IFNAME: b"eth0\0",
        netlink.IFLA_MTU: struct.pack("=I", 1400),
        netlink.IFLA_NET_NS_FD: struct.pack("=I", 9),
    }


def test_set_link_request_changes_only_the_up_flag() -> None:
    body = netlink.set_link_request(5, up=True, mtu=1500, name="new0")
    assert struct.unpack_from("=BxHiII", body) == (0, 0, 5, netlink.IFF_UP, netlink.IFF_UP)
    assert netlink.parse_attrs(body, 16) == {netlink.IFLA_IFNAME: b"new0\0", netlink.IFLA_MTU: struct.pack("=I", 1500)}
    assert struct.unpack_from("=BxHiII", netlink.set_link_request(5, up=False)) == (0, 0, 5, 0, netlink.IFF_UP)
    assert struct.unpack_from("=BxHiII", netlink.set_link_request(5, mtu=9000))[3:] == (0, 0)


def test_address_request() -> None:
    v4 = netlink.address_request(3, "10.0.0.5", 32)
    assert struct.unpack_from("=BBBBI", v4) == (socket.AF_INET, 32, 0, 0, 3)
    assert netlink.parse_attrs(v4, 8) == {netlink.IFA_LOCAL: bytes([10, 0, 0, 5]), netlink.IFA_ADDRESS: bytes([10, 0, 0, 5])}
    v6 = netlink.address_request(3, "fd00::5", 128)
    assert struct.unpack_from("=BBBBI", v6) == (socket.AF_INET6, 128, netlink.IFA_F_NODAD, 0, 3)
    assert netlink.parse_address(v6) == netlink.Address(socket.AF_INET6, "fd00::5", 128, 3)


def test_route_requests() -> None:
    default = netlink.route_request("0.0.0.0", 0, gateway="169.254.1.1", oif=4)
    family, dst_len, _, _, table, proto, scope, rtype, flags = struct.unpack_from("=BBBBBBBBI", default)
    assert (family, dst_len, table, proto, scope, rtype, flags) == (
        socket.AF_INET, 0, netlink.RT_TABLE_MAIN, netlink.RTPROT_BOOT, 0, netlink.RTN_UNICAST, 0)
    attrs = netlink.parse_attrs(default, 12)
    assert netlink.RTA_DST not in attrs
    assert attrs[netlink.RTA_GATEWAY] == bytes([169, 254, 1, 1])
    assert attrs[netlink.RTA_OIF] == struct.pack("=I", 4)
    host = netlink.route_request("10.0.0.5", 32, oif=9, scope=netlink.RT_SCOPE_LINK, onlink=True)
    route = netlink.parse_route(host)
    assert route == netlink.Route(socket.AF_INET, "10.0.0.5", 32, None, 9, netlink.RT_SCOPE_LINK,
                                  netlink.RT_TABLE_MAIN, netlink.RTNH_F_ONLINK)
    v6 = netlink.parse_route(netlink.route_request("::", 0, gateway="fe80::1", oif=2))
    assert (v6.family, v6.dst, v6.gateway) == (socket.AF_INET6, None, "fe80::1")
    big_table = netlink.parse_route(netlink.route_request("10.0.0.0", 8, oif=2, table=1000))
    assert big_table.table == 1000


def test_error_with_extended_ack_message() -> None:
    request_header = struct.pack("=IHHII", 32, netlink.RTM_NEWLINK, 5, 1, 0)
    tlv = netlink.attr(netlink.NLMSGERR_ATTR_MSG, b"Unknown device type\0")
    body = struct.pack("=i", -errno.EOPNOTSUPP) + request_header + tlv
    assert netlink.parse_error(netlink.NLM_F_ACK_TLVS, body) == (errno.EOPNOTSUPP, "Unknown device type")
    assert netlink.parse_error(0, struct.pack("=i", 0) + request_header) == (0, "")
    err = NetlinkError(errno.EEXIST, "create veth cali1 with peer eth0", "kernel says so")
    assert isinstance(err, OSError) and err.errno == err.code == errno.EEXIST
    assert str(err) == "create veth cali1 with peer eth0: File exists (kernel says so)"


def test_mac_conversion() -> None:
    assert netlink.mac_str(netlink.mac_bytes("EE:ee:0a:0B:00:ff")) == "ee:ee:0a:0b:00:ff"
    with pytest.raises(ValueError):
        netlink.mac_bytes("ee:ee")


# -- the real kernel, in private namespaces ------------------------------------------------


@pytest.mark.netns
def test_links_addresses_routes_against_the_kernel() -> None:
    with Netns("pnl") as a, Netns("pnl") as b:
        def create() -> netlink.Link:
            fd = os.open(b.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with Netlink() as nl:
                    nl.add_veth("vtest0", "vpeer0", peer_netns_fd=fd, mac="ee:ee:ee:ee:ee:ee", mtu=1400,
                                peer_mtu=1300)
                    link = nl.link("vtest0")
                    assert nl.link("vpeer0") is None  # the peer went straight to b
                    assert link is not None and nl.link_by_index(link.index) == link
                    return link
            finally:
                os.close(fd)

        def peer_in_b() -> netlink.Link | None:
            with Netlink() as nl:
                return nl.link("vpeer0")

        def configure(link: netlink.Link) -> None:
            with Netlink() as nl:
                nl.set_link(link.index, up=True, name="vtest1")
                renamed = nl.link("vtest1")
                assert renamed is not None and renamed.index == link.index and renamed.up
                nl.add_address(link.index, "10.99.0.1", 32)
                nl.add_address(link.index, "fd99::1", 128)
                assert {a.cidr for a in nl.addresses(link.index)} >= {"10.99.0.1/32", "fd99::1/128"}
                nl.add_route("10.99.1.7", 32, oif=link.index, scope=netlink.RT_SCOPE_LINK, label="vtest1")
                route = nl.get_route("10.99.1.7")
                assert route is not None and route.oif == link.index
                assert any(r.dst == "10.99.1.7" and r.dst_len == 32 for r in nl.routes(socket.AF_INET))
                nl.del_link(link.index, "vtest1")
                assert nl.link("vtest1") is None

        link = run_in_netns(a.path, create)
        assert (link.mac, link.mtu, link.up) == ("ee:ee:ee:ee:ee:ee", 1400, False)
        peer = run_in_netns(b.path, peer_in_b)
        assert peer is not None and peer.mtu == 1300
        run_in_netns(a.path, lambda: configure(link))
        assert run_in_netns(b.path, peer_in_b) is None  # deleting one end removed the peer in b too


@pytest.mark.netns
def test_kernel_errors_name_the_object() -> None:
    with Netns("pnl") as a:
        def in_a() -> None:
            with Netlink() as nl:
                nl.add_veth("vdup0", "vdup1")
                with pytest.raises(NetlinkError) as exists:
                    nl.add_veth("vdup0", "vdup2")
                assert exists.value.code == errno.EEXIST
                assert "create veth vdup0 with peer vdup2" in str(exists.value)
                assert "File exists" in str(exists.value)
                link = nl.link("vdup0")
                assert link is not None
                nl.set_link(link.index, up=True)
                nl.add_address(link.index, "10.98.0.1", 32, label="vdup0")
                with pytest.raises(NetlinkError) as addr:
                    nl.add_address(link.index, "10.98.0.1", 32, label="vdup0")
                assert addr.value.code == errno.EEXIST and "10.98.0.1/32 to vdup0" in str(addr.value)
                nl.add_route("10.98.5.0", 24, oif=link.index, scope=netlink.RT_SCOPE_LINK, label="vdup0")
                with pytest.raises(NetlinkError) as route:
                    nl.add_route("10.98.5.0", 24, oif=link.index, scope=netlink.RT_SCOPE_LINK, label="vdup0")
                assert route.value.code == errno.EEXIST and "route 10.98.5.0/24 dev vdup0" in str(route.value)
                with pytest.raises(NetlinkError) as gone:
                    nl.del_link(99999, "cali-nothing")
                assert gone.value.code == errno.ENODEV and "delete link cali-nothing" in str(gone.value)
                with pytest.raises(NetlinkError) as unreachable_gw:
                    nl.add_route("0.0.0.0", 0, gateway="192.0.2.77", oif=link.index, label="vdup0")
                assert "add route 0.0.0.0/0 via 192.0.2.77 dev vdup0" in str(unreachable_gw.value)
                assert nl.link("no-such-link") is None
                assert nl.link_by_index(99999) is None

        run_in_netns(a.path, in_a)


# -- the data plane on top of it ------------------------------------------------------


@pytest.mark.netns
def test_dataplane_setup_check_teardown_and_error_messages() -> None:
    host_if = f"calitnl{uuid.uuid4().hex[:6]}"
    with Netns("pnl") as ns:
        pod = dataplane.PodNetwork(host_ifname=host_if, ifname="eth0", netns=ns.path, mtu=1410,
                                   addresses=["10.97.0.9/32", "fd97::9/128"])
        try:
            dataplane.setup(pod)
            assert pod.container_mac and pod.container_mac != dataplane.HOST_MAC
            assert host_if in cali_links()
            dataplane.check(pod, pod.container_mac)
            out = ns.run("ip", "-o", "route", "show", "default").stdout
            assert "via 169.254.1.1 dev eth0" in out
            assert "mtu 1410" in ns.run("ip", "-o", "link", "show", "eth0").stdout
            with pytest.raises(CNIError) as mac:
                dataplane.check(pod, "02:00:00:00:00:01")
            assert mac.value.code == CHECK_FAILED and "eth0 has MAC" in str(mac.value)
            # The same pod again: eth0 already exists in the netns.
            other = dataplane.PodNetwork(host_ifname=f"calitnm{uuid.uuid4().hex[:6]}", ifname="eth0",
                                         netns=ns.path, mtu=1410, addresses=["10.97.0.10/32"])
            with pytest.raises(CNIError) as exists:
                dataplane.setup(other)
            assert exists.value.code == DATAPLANE_ERROR
            assert f"interface eth0 already exists in {ns.path}" in str(exists.value)
            assert other.host_ifname not in cali_links()
            # A host route to the address via another interface is refused, naming it.
            with Netns("pnl") as ns2:
                clash = dataplane.PodNetwork(host_ifname=f"calitno{uuid.uuid4().hex[:6]}", ifname="eth0",
                                             netns=ns2.path, mtu=1410, addresses=["10.97.0.9/32"])
                try:
                    with pytest.raises(CNIError) as route:
                        dataplane.setup(clash)
                    assert f"already exists via another interface {host_if}" in str(route.value)
                finally:
                    dataplane.teardown(clash.host_ifname, ns2.path, clash.ifname)
                assert clash.host_ifname not in cali_links()
        finally:
            dataplane.teardown(host_if, ns.path, "eth0")
        assert host_if not in cali_links()
        dataplane.teardown(host_if, ns.path, "eth0")  # again: nothing left is success
    with pytest.raises(CNIError) as missing:
        dataplane.setup(dataplane.PodNetwork(host_ifname=host_if, ifname="eth0", netns=ns.path, mtu=1500,
                                             addresses=["10.97.0.11/32"]))
    assert f"network namespace {ns.path} does not exist" in str(missing.value)
    assert host_if not in cali_links()
