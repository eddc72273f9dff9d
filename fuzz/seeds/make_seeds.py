#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz/seeds/ (run from anywhere: python3 make_seeds.py).

dns_query: wire-format queries for the fuzz target's zones. ipvs_genl: kernel replies built
the way src/proxy/ipvs/tests.rs builds them (little-endian host order). uapi_reader: UAPI
requests. config_parse: the example configs plus a few small ones. The seeds of the
Arbitrary-driven targets (allowed_ips, plan_confined, device_datagram) are inputs kept from a
short fuzzing run (scripts/fuzz.sh documents how), not written here.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- dns_query ------------------------------------------------------------------------------
def qname(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(name, qtype, qid=0x1234, edns=None, edns_version=0, qclass=1, opcode=0, rd=True):
    flags = (opcode << 11) | (0x0100 if rd else 0)
    arcount = 1 if edns is not None else 0
    msg = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, arcount)
    msg += qname(name) + struct.pack(">HH", qtype, qclass)
    if edns is not None:
        # OPT: root name, type 41, class = UDP size, TTL = ext-rcode|version|flags, no rdata
        msg += b"\0" + struct.pack(">HHBBHH", 41, edns, 0, edns_version, 0, 0)
    return msg


A, NS, SOA, AAAA, SRV, ANY = 1, 2, 6, 28, 33, 255
put("dns_query", "a_clusterip", query("web.ns.svc.cluster.b.", A))
put("dns_query", "aaaa_edns", query("web.ns.svc.cluster.b.", AAAA, edns=1232))
put("dns_query", "a_headless_edns512", query("big.ns.svc.cluster.b.", A, edns=512))
put("dns_query", "srv_headless", query("_http._tcp.big.ns.svc.cluster.b.", SRV, edns=4096))
put("dns_query", "a_huge_udp", query("huge.ns.svc.cluster.b.", A, edns=4096))
put("dns_query", "aaaa_clusterset", query("web.ns.svc.clusterset.local.", AAAA))
put("dns_query", "srv_clusterset", query("_dns._udp.pg.db.svc.clusterset.local.", SRV, edns=1232))
put("dns_query", "any_six", query("six.ns.svc.cluster.b.", ANY))
put("dns_query", "endpoint_name", query("10-132-0-2.big.ns.svc.cluster.b.", A))
put("dns_query", "mixed_case", query("MIXED-case.other-ns.SVC.cluster.B.", A))
put("dns_query", "soa_apex", query("cluster.empty.", SOA))
put("dns_query", "nxdomain", query("nope.ns.svc.cluster.b.", A))
put("dns_query", "nodata_ns", query("ns.svc.cluster.c.", A))
put("dns_query", "stale_servfail", query("web.ns.svc.cluster.stale.", A))
put("dns_query", "refused_outside", query("example.com.", A))
put("dns_query", "badvers", query("web.ns.svc.cluster.b.", A, edns=1232, edns_version=1))
put("dns_query", "class_chaos", query("web.ns.svc.cluster.b.", A, qclass=3))
put("dns_query", "opcode_notify", query("cluster.b.", SOA, opcode=4))
loop = struct.pack(">HHHHHH", 0xABCD, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack(">HH", 1, 1)
put("dns_query", "compression_loop", loop)
two = query("web.ns.svc.cluster.b.", A)
two = two[:4] + struct.pack(">H", 2) + two[6:] + qname("web.ns.svc.cluster.c.") + struct.pack(">HH", 1, 1)
put("dns_query", "two_questions", two)

# ---- ipvs_genl ------------------------------------------------------------------------------
FAMILY = 0x1C


def nla(kind, value):
    v = struct.pack("<HH", 4 + len(value), kind) + value
    return v + b"\0" * (-len(v) % 4)


def nlmsg(ty, flags, seq, payload):
    return struct.pack("<IHHII", 16 + len(payload), ty, flags, seq, 0) + payload


def genl(cmd, attrs):
    return bytes([cmd, 1, 0, 0]) + attrs


u16 = lambda v: struct.pack("<H", v)
u32 = lambda v: struct.pack("<I", v)
u64 = lambda v: struct.pack("<Q", v)
addr16 = lambda b: bytes(b) + b"\0" * (16 - len(b))


def stats32(base):
    return b"".join([
        nla(1, u32(base + 1)), nla(2, u32(base + 2)), nla(3, u32(base + 3)), nla(11, b""),
        nla(4, u64(base + 4)), nla(5, u64(base + 5)), nla(6, u32(base + 6)),
        nla(7, u32(base + 7)), nla(8, u32(base + 8)), nla(9, u32(base + 9)), nla(10, u32(base + 10)),
    ])


def stats64(base):
    return b"".join(nla(k, u64(base + k)) for k in range(1, 11))


svc = b"".join([
    nla(1, u16(2)), nla(2, u16(6)), nla(3, addr16([10, 0, 0, 1])), nla(4, b"\x00\x50"),
    nla(6, b"rr\0"), nla(7, u32(2) + u32(0xFFFFFFFF)), nla(8, u32(0)),
    nla(9, b"\xff\xff\xff\xff"), nla(10, stats32(100)), nla(99, b"\1\2\3\4\5"),
    nla(12, stats64(5_000_000_000)),
])
done = nlmsg(3, 2, 42, struct.pack("<i", 0))
put("ipvs_genl", "service_dump", nlmsg(FAMILY, 2, 42, genl(1, nla(1, svc))) + done)
svc6 = b"".join([
    nla(1, u16(10)), nla(2, u16(17)), nla(3, bytes([0xFD] + [0] * 14 + [1])), nla(4, b"\x00\x35"),
    nla(6, b"sh\0"), nla(11, b"sip\0"), nla(7, u32(3) + u32(0xFFFFFFFF)), nla(8, u32(300)),
    nla(9, u32(64)),
])
put("ipvs_genl", "service_v6_persistent", nlmsg(FAMILY, 0, 7, genl(1, nla(1 | 0x8000, svc6))))
fwm = b"".join([
    nla(1, u16(2)), nla(5, u32(7)), nla(6, b"wlc\0"), nla(7, u32(2) + u32(0xFFFFFFFF)),
    nla(8, u32(0)), nla(9, b"\xff\xff\xff\0"),
])
put("ipvs_genl", "service_fwmark", nlmsg(FAMILY, 0, 8, genl(1, nla(1, fwm))))
dest = b"".join([
    nla(1, addr16([10, 1, 0, 7])), nla(2, b"\x1f\x90"), nla(3, u32(0)), nla(4, u32(2)),
    nla(13, b"\0"), nla(14, b"\0\0"), nla(15, u16(0)), nla(5, u32(100)), nla(6, u32(10)),
    nla(7, u32(3)), nla(8, u32(4)), nla(9, u32(5)), nla(11, u16(2)), nla(10, stats32(0)),
    nla(12, stats64(1 << 40)), nla(200, b"future"),
])
put("ipvs_genl", "dest_dump", nlmsg(FAMILY, 2, 9, genl(5, nla(2, dest))) + nlmsg(3, 2, 9, struct.pack("<i", 0)))
tun = b"".join([
    nla(1, addr16([10, 2, 0, 1])), nla(2, b"\0\x35"), nla(3, u32(2)), nla(4, u32(1)),
    nla(5, u32(0)), nla(6, u32(0)), nla(7, u32(0)), nla(8, u32(0)), nla(9, u32(0)),
    nla(11, u16(2)), nla(13, b"\1"), nla(14, b"\x17\xc0"), nla(15, u16(1)),
])
put("ipvs_genl", "dest_tunnel", nlmsg(FAMILY, 0, 10, genl(5, nla(2, tun))))
put("ipvs_genl", "info_reply", nlmsg(FAMILY, 0, 11, genl(14, nla(1, u32(0x010201)) + nla(2, u32(4096)))))
put("ipvs_genl", "config_reply", nlmsg(FAMILY, 0, 12, genl(12, nla(4, u32(900)) + nla(5, u32(120)) + nla(6, u32(300)))))
ack = nlmsg(2, 0x100, 5, struct.pack("<i", 0) + b"\0" * 16)
put("ipvs_genl", "ack", ack)
err = nlmsg(2, 0x300, 6, struct.pack("<i", -3) + b"\0" * 16 + nla(1, b"no such service\0"))
put("ipvs_genl", "error_extack_capped", err)
orig = nlmsg(FAMILY, 5, 7, genl(3, nla(1, nla(1, u16(2)) + nla(2, u16(6)))))
put("ipvs_genl", "error_extack_uncapped", nlmsg(2, 0x200, 7, struct.pack("<i", -22) + orig + nla(1, b"bad attr\0")))
fam = nlmsg(0x10, 0, 1, bytes([1, 2, 0, 0]) + nla(2, b"IPVS\0") + nla(1, u16(0x23)) + nla(3, u32(1)) + nla(5, u32(6)) + nla(6 | 0x8000, nla(1, nla(1, u32(1)))) + nla(250, b"?"))
put("ipvs_genl", "family_reply", fam)
put("ipvs_genl", "genl_payload_only", genl(1, nla(1, svc)))

# ---- uapi_reader ----------------------------------------------------------------------------
put("uapi_reader", "get", "get=1\n\n")
put("uapi_reader", "set", "set=1\nprivate_key=00\nlisten_port=51820\n\n")
put("uapi_reader", "crlf_and_bogus", "\r\nbogus=1\r\n\r\nget=1\r\n\r\nget=1")
put("uapi_reader", "two_ops", "get=1\nset=1\n\nget=1\n\n")
put("uapi_reader", "too_long", "get=1\n" + "x" * 4091 + "\n\n")
put("uapi_reader", "not_utf8", b"get=1\n\n\xff\xfe\nget=1\n\n")

# ---- config_parse ---------------------------------------------------------------------------
for name in ("config.yaml", "config-kube.yaml"):
    with open(os.path.join(ROOT, "examples", name), "rb") as f:
        put("config_parse", "example_" + name.replace(".yaml", ""), f.read())
put("config_parse", "minimal", "cluster: {name: east, podCIDRs: [10.128.0.0/14]}\n")
put("config_parse", "dual_stack_static", """cluster:
  name: east
  podCIDRs: [10.128.0.0/14, "fd00:128::/48"]
  serviceCIDRs: [10.96.0.0/16]
node: {name: a1, podCIDRs: [10.128.1.0/24], sourceIP: 10.128.1.1}
tunnel: {endpoint: "192.0.2.1:51830", persistentKeepalive: 0}
dns: {clusterSetDomain: mesh.example, ttl: 30, forwarders: ["10.96.0.10", "[fd00::53]:5353"], serveStale: false}
http: {listen: "127.0.0.1:9477", readyTimeoutSeconds: 10}
limits: {nodes: 100, services: 100, endpointSlices: 100, messageBytes: 1048576}
proxy: {backend: ipvs, scheduler: mh, device: sdn-vip0}
remotes:
  - name: west
    podCIDRs: [10.132.0.0/14, "fd00:132::/48"]
    serviceCIDRs: [10.101.0.0/16]
    static:
      peers:
        - {name: b1, publicKey: 4ONiAEenjiGp0lgFD1UTkoqxnIHcISSKx9IX8357aW0=, endpoint: "[2001:db8::12]:51820", podCIDRs: [10.132.1.0/24, "fd00:132:1::/64"]}
        - {publicKey: 2S1OsDzbX+zWb+gIOdFvMM+B0nryXhbDOJut0zweQh0=, endpoint: "127.0.0.1:51820", podCIDRs: [10.132.2.0/24]}
      services:
        - {namespace: ns, name: dns, clusterIPs: [10.101.0.53], ports: [{name: dns, port: 53, protocol: UDP}],
           sessionAffinityTimeout: 60, endpoints: [{ip: 10.132.1.9, ports: {dns: 5353}}, {ip: 10.132.2.9, ready: false}]}
  - name: north
    podCIDRs: [10.136.0.0/14]
    kubeconfig: /etc/sdn-tunnel/remotes/north
    context: north
""")
put("config_parse", "many_errors", """cluster: {name: East, podCIDRs: [10.128.0.1/14], serviceCIDRs: [10.132.0.0/16]}
node: {podCIDRs: [10.200.0.0/24], sourceIP: 10.9.9.9}
tunnel: {device: "this-name-is-too-long", mtu: 100, listenPort: 0, udpBufferBytes: 1, routeProtocol: 2}
proxy: {scheduler: fifo, peerDownAfterSeconds: 10}
dns: {ttl: 0, clusterSetDomain: "bad_domain", forwarders: ["nope", "[::]:10053"]}
http: {listen: "[::]:10053", readyTimeoutSeconds: 0}
limits: {nodes: 0, messageBytes: 10}
remotes:
  - name: local
    podCIDRs: [10.128.0.0/16]
    static:
      peers:
        - {publicKey: bad, endpoint: "host:1", podCIDRs: [10.0.0.0/8, 10.128.0.0/16]}
        - {publicKey: 4ONiAEenjiGp0lgFD1UTkoqxnIHcISSKx9IX8357aW0=, podCIDRs: [10.128.0.0/24]}
      services:
        - {namespace: "", name: web, clusterIP: 10.1.1.1, ports: [], endpoints: [{ip: 10.99.0.1, ports: {"a.b": 1}}]}
    kubeconfig: ""
  - name: local
    podCIDRs: []
    context: x
""")


# ---- tun_offload ----------------------------------------------------------------------------
def csum(data, start=0):
    if len(data) % 2:
        data += b"\0"
    s = start + sum(struct.unpack(">%dH" % (len(data) // 2), data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def tcp_segment(v6, seq, ip_id, payload, flags=0x10):
    tcp = struct.pack(">HHIIBBHHH", 40000, 80, seq, 77, 5 << 4, flags, 500, 0, 0) + payload
    if v6:
        src, dst = bytes([0xFD] + [0] * 14 + [1]), bytes([0xFD] + [0] * 14 + [2])
        ip = struct.pack(">IHBB", 6 << 28, len(tcp), 6, 64) + src + dst
        pseudo = sum(struct.unpack(">16H", src + dst)) + 6 + len(tcp)
    else:
        src, dst = bytes([10, 128, 0, 5]), bytes([10, 132, 0, 7])
        ip = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(tcp), ip_id, 0x4000, 64, 6, 0) + src + dst
        ip = ip[:10] + struct.pack(">H", csum(ip)) + ip[12:]
        pseudo = sum(struct.unpack(">4H", src + dst)) + 6 + len(tcp)
    tcp = tcp[:16] + struct.pack(">H", csum(tcp, pseudo)) + tcp[18:]
    return ip + tcp


def vnet(flags, gso_type, gso_size, csum_start=0, csum_offset=0):
    return struct.pack("<BBHHHH", flags, gso_type, 0, gso_size, csum_start, csum_offset)


for v6 in (False, True):
    fam = "v6" if v6 else "v4"
    big = tcp_segment(v6, 1000, 0x100, bytes(range(256)) * 12, flags=0x18)
    put("tun_offload", f"split-tso-{fam}", b"\0" + vnet(1, 4 if v6 else 1, 1000) + big)
    put("tun_offload", f"split-plain-{fam}", b"\0" + vnet(0, 0, 0) + tcp_segment(v6, 1, 1, b"hi"))
    segs = [tcp_segment(v6, 1000 + 500 * i, 0x100 + i, bytes([i]) * 500) for i in range(4)]
    segs.append(tcp_segment(v6, 3000, 0x104, b"end", flags=0x18))
    put("tun_offload", f"gro-stream-{fam}", b"\1" + b"".join(struct.pack(">H", len(s)) + s for s in segs))


def udp_packet(v6, payload):
    udp_len = 8 + len(payload)
    if v6:
        src, dst = bytes([0xfd] + [0] * 14 + [1]), bytes([0xfd] + [0] * 14 + [2])
        ip = struct.pack(">IHBB", 0x60000000, udp_len, 17, 64) + src + dst
        pseudo = sum(struct.unpack(">16H", src + dst)) + 17 + udp_len
    else:
        src, dst = bytes([10, 128, 0, 5]), bytes([10, 132, 0, 7])
        ip = struct.pack(">BBHHHBBH", 0x45, 0, 20 + udp_len, 0x77, 0x4000, 64, 17, 0) + src + dst
        ip = ip[:10] + struct.pack(">H", csum(ip)) + ip[12:]
        pseudo = sum(struct.unpack(">4H", src + dst)) + 17 + udp_len
    udp = struct.pack(">HHHH", 5353, 9999, udp_len, 0) + payload
    udp = udp[:6] + struct.pack(">H", csum(udp, pseudo)) + udp[8:]
    return ip + udp


# USO (GSO type 5): a UDP super-packet of 3000 bytes cut at 1200.
for v6 in (False, True):
    fam = "v6" if v6 else "v4"
    put("tun_offload", f"split-uso-{fam}", b"\0" + vnet(1, 5, 1200) + udp_packet(v6, bytes(range(250)) * 12))

