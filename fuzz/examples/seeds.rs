//! Writes the seed corpus, `fuzz/corpus/<target>/` (run from `fuzz/`:
//! `cargo run --example seeds`). Deterministic: the same files every time. The
//! `interface_receive` seeds are real exchanges with a second interface, recorded as the
//! records that target reads; they replay exactly because the interface under test is built
//! the same way (`veil_fuzz::Harness`).

use std::path::Path;

use veil::noise::{Config, Interface, PresharedKey, StaticSecret};
use veil_fuzz::*;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// The other side: the harness's peer, talking to it.
fn initiator(h: &Harness) -> (Interface, veil::noise::PeerId) {
    let mut i = Interface::new(StaticSecret::from_bytes(INITIATOR_SECRET), Config::default(), clock(h.t0), [11; 32]);
    let peer = i.add_peer(h.public_key()).unwrap();
    i.set_endpoint(peer, Some(responder_addr())).unwrap();
    i.set_psk(peer, Some(PresharedKey::from_bytes(PSK))).unwrap();
    (i, peer)
}

/// Runs a record on the harness and keeps it in `script`.
fn play(h: &mut Harness, script: &mut Vec<u8>, op: u8, body: &[u8]) {
    h.step(op, body);
    script.extend(record(op, body));
}

/// Datagrams the harness sent since `from`, handed to the initiator; returns what it sent back.
fn exchange(h: &Harness, from: usize, i: &mut Interface, now: std::time::Instant, under_load: bool) -> Vec<Vec<u8>> {
    let mut out = Capture::default();
    for (_, d) in &h.out.sent[from..] {
        let _ = i.receive(responder_addr(), &mut d.clone(), now, under_load, &mut out);
    }
    out.sent.into_iter().map(|(_, d)| d).collect()
}

fn receive_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let packet = ipv4_udp(b"hello through the tunnel");

    // 1. The peer initiates, we answer, it sends data and a keepalive; time passes.
    let mut h = Harness::new();
    let (mut i, pr) = initiator(&h);
    let mut script = Vec::new();
    let mut out = Capture::default();
    i.initiate(pr, h.now, &mut out).unwrap();
    let init = out.sent.pop().unwrap().1;
    let mark = h.out.sent.len();
    play(&mut h, &mut script, OP_DATAGRAM, &init);
    // The initiator confirms the session with a keepalive.
    for d in exchange(&h, mark, &mut i, h.now, false) {
        play(&mut h, &mut script, OP_DATAGRAM, &d);
    }
    let mut out = Capture::default();
    i.send(pr, &packet, h.now, &mut out).unwrap();
    i.send(pr, &[], h.now, &mut out).unwrap();
    for (_, d) in &out.sent {
        play(&mut h, &mut script, OP_DATAGRAM, d);
    }
    assert!(h.out.delivered.iter().any(|(_, p)| *p == packet), "the seed must reach delivery");
    seeds.push(("peer_initiates".to_string(), script.clone()));
    // ... then two minutes and more pass (rekey, expiry timers), and one more packet.
    play(&mut h, &mut script, OP_ADVANCE, &130_000u32.to_le_bytes()[..3]);
    play(&mut h, &mut script, OP_SEND, &packet);
    seeds.push(("peer_initiates_then_time".to_string(), script));

    // 2. We initiate (a packet to send starts it), the peer answers, data flows both ways.
    let mut h = Harness::new();
    let (mut i, _) = initiator(&h);
    let mut script = Vec::new();
    let mark = h.out.sent.len();
    play(&mut h, &mut script, OP_SEND, &packet);
    let back = exchange(&h, mark, &mut i, h.now, false);
    let response = back.first().expect("a response").clone();
    let mark = h.out.sent.len();
    play(&mut h, &mut script, OP_DATAGRAM, &response);
    let back = exchange(&h, mark, &mut i, h.now, false);
    for d in &back {
        play(&mut h, &mut script, OP_DATAGRAM, d);
    }
    seeds.push(("we_initiate".to_string(), script));

    // 3. We initiate; the peer is under load and sends a cookie reply; we retry with mac2.
    let mut h = Harness::new();
    let (mut i, _) = initiator(&h);
    let mut script = Vec::new();
    let mark = h.out.sent.len();
    play(&mut h, &mut script, OP_INITIATE, &[]);
    let back = exchange(&h, mark, &mut i, h.now, true);
    let cookie = back.first().expect("a cookie reply").clone();
    assert_eq!(cookie[0], 3);
    play(&mut h, &mut script, OP_DATAGRAM, &cookie);
    play(&mut h, &mut script, OP_ADVANCE, &6_000u32.to_le_bytes()[..3]);
    let back = exchange(&h, mark + 1, &mut i, h.now, true);
    if let Some(response) = back.first() {
        play(&mut h, &mut script, OP_DATAGRAM, response);
    }
    seeds.push(("cookie_reply".to_string(), script));

    // 4. We are under load: the peer's initiation gets a cookie reply, then comes back.
    let mut h = Harness::new();
    let (mut i, pr) = initiator(&h);
    let mut script = Vec::new();
    let mut out = Capture::default();
    i.initiate(pr, h.now, &mut out).unwrap();
    let init = out.sent.pop().unwrap().1;
    let mark = h.out.sent.len();
    play(&mut h, &mut script, OP_DATAGRAM | F_UNDER_LOAD, &init);
    let back = exchange(&h, mark, &mut i, h.now, false);
    let _ = back;
    seeds.push(("we_are_under_load".to_string(), script));

    // 5. Single messages: each type, with mac1 to be fixed, from a stranger.
    let mut out = Capture::default();
    let (mut i, pr) = initiator(&Harness::new());
    i.initiate(pr, std::time::Instant::now(), &mut out).unwrap();
    let init = out.sent.pop().unwrap().1;
    let mut response = init[..92].to_vec();
    response[0] = 2;
    seeds.push(("fix_mac1_initiation".into(), record(OP_DATAGRAM | F_FIX_MAC1, &init)));
    seeds.push((
        "fix_mac1_response".into(),
        [record(OP_INITIATE, &[]), record(OP_DATAGRAM | F_FIX_MAC1, &response)].concat(),
    ));
    seeds.push(("stranger".into(), record(OP_DATAGRAM | F_STRANGER | F_UNDER_LOAD, &init)));
    let mut data = vec![4, 0, 0, 0];
    data.extend_from_slice(&[0; 44]);
    seeds.push(("unknown_index".into(), record(OP_DATAGRAM, &data)));
    seeds
}

fn tcp(v6: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let iph = if v6 { 40 } else { 20 };
    let mut p = vec![0u8; iph + 20 + payload.len()];
    let len = p.len();
    if v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[23] = 1;
        p[39] = 2;
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    }
    let t = &mut p[iph..];
    t[0..2].copy_from_slice(&1000u16.to_be_bytes());
    t[2..4].copy_from_slice(&2000u16.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&7u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&500u16.to_be_bytes());
    t[20..].copy_from_slice(payload);
    p
}

fn udp6(payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 48 + payload.len()];
    let len = p.len();
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[23] = 1;
    p[39] = 2;
    p[40..42].copy_from_slice(&5000u16.to_be_bytes());
    p[42..44].copy_from_slice(&53u16.to_be_bytes());
    p[44..46].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p[46..48].copy_from_slice(&0x1234u16.to_be_bytes());
    p[48..].copy_from_slice(payload);
    p
}

fn vnet(hdr: veil::sys::tun::VirtioNetHdr, packet: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; veil::sys::tun::HEADROOM];
    hdr.write(&mut b);
    b.extend_from_slice(packet);
    b
}

fn main() {
    for (name, bytes) in receive_seeds() {
        write("interface_receive", &name, &bytes);
    }

    // Messages: one of each type from the exchanges above, plus edge sizes.
    let h = Harness::new();
    let (mut i, pr) = initiator(&h);
    let mut out = Capture::default();
    i.initiate(pr, h.now, &mut out).unwrap();
    let init = out.sent.pop().unwrap().1;
    write("messages", "initiation", &init);
    let mut response = init[..92].to_vec();
    response[0] = 2;
    write("messages", "response", &response);
    let mut cookie = init[..64].to_vec();
    cookie[0] = 3;
    write("messages", "cookie_reply", &cookie);
    let mut keepalive = vec![0u8; 32];
    keepalive[0] = 4;
    write("messages", "keepalive", &keepalive);
    let mut data = vec![0u8; 32 + 48];
    data[0] = 4;
    write("messages", "data", &data);
    write("messages", "short", &[1, 0, 0]);
    write("messages", "reserved", &[1, 0, 1, 0]);

    // UAPI.
    let pk = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
    let sk = "a8".repeat(32);
    write("uapi", "get", b"get=1\n\n");
    write(
        "uapi",
        "set_full",
        format!(
            "set=1\nprivate_key={sk}\nlisten_port=51820\nfwmark=7\nreplace_peers=true\npublic_key={pk}\n\
             preshared_key={}\nendpoint=[2001:db8::1]:51820\npersistent_keepalive_interval=25\n\
             replace_allowed_ips=true\nallowed_ip=10.0.0.7/24\nallowed_ip=-192.168.0.0/16\nallowed_ip=fd00::1\n\
             protocol_version=1\n\n",
            "11".repeat(32)
        )
        .as_bytes(),
    );
    write(
        "uapi",
        "set_zones",
        format!(
            "set=1\npublic_key={pk}\nendpoint=[fe80::1%eth0]:1\npublic_key={}\nendpoint=[fe80::2%3]:2\n\n",
            "ab".repeat(32)
        )
        .as_bytes(),
    );
    write(
        "uapi",
        "set_remove",
        format!("set=1\npublic_key={pk}\nremove=true\nupdate_only=true\n\nget=1\n\n").as_bytes(),
    );
    write("uapi", "crlf_and_cut", format!("set=1\r\nlisten_port=1\r\n\r\nset=1\npublic_key={pk}\n").as_bytes());
    write(
        "uapi",
        "zero_keys",
        format!("set=1\nprivate_key={}\npublic_key={pk}\npreshared_key={}\n\n", "0".repeat(64), "0".repeat(64))
            .as_bytes(),
    );
    write("uapi", "not_utf8", b"set=1\nlisten_port=\xff\n\n");

    // wg-quick configs.
    write(
        "config",
        "full",
        b"[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nListenPort = 51820\n\
          Address = 10.0.0.1/24, fd00::1/64\nDNS = 10.0.0.53, example.org\nMTU = 1420\nTable = off\n\
          FwMark = 0x1234\nPreUp = echo up # comment\nPostDown = echo down\nSaveConfig = true\n\n\
          [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
          PresharedKey = FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=\nAllowedIPs = 10.0.0.2/32, fd00::/64\n\
          Endpoint = [2001:db8::1]:51820\nPersistentKeepalive = 25\n\n[Peer]\n\
          PublicKey = TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=\nAllowedIPs = 0.0.0.0/0\nEndpoint = peer.example:4500\n",
    );
    write(
        "config",
        "minimal",
        b"[interface]\nprivatekey=yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n[peer]\npublickey=xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nallowedips=10.1.0.0/16,,\npersistentkeepalive=off\n",
    );

    // IP packets (first byte 0: no routes; 2: two routes).
    let udp4 = ipv4_udp(b"abc");
    write("ip", "udp4", &[&[0][..], &udp4].concat());
    write(
        "ip",
        "udp6_routes",
        &[&[2, 8, 10, 0, 0, 0, 0x80 | 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..], &udp6(b"xyz")].concat(),
    );
    write("ip", "tcp4_routes", &[&[2, 24, 10, 0, 0, 0, 32, 10, 0, 0, 2][..], &tcp(false, 1, 0x10, b"data")].concat());

    // Super-segments as a TUN read gives them.
    use veil::sys::tun::VirtioNetHdr as H;
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    for (name, v6) in [("tso4", false), ("tso6", true)] {
        let iph = if v6 { 40 } else { 20 };
        let hdr = H {
            flags: H::F_NEEDS_CSUM,
            gso_type: if v6 { H::GSO_TCPV6 } else { H::GSO_TCPV4 },
            hdr_len: iph + 20,
            gso_size: 1000,
            csum_start: iph,
            csum_offset: 16,
        };
        write("virtio_split", name, &vnet(hdr, &tcp(v6, 5, 0x18, &payload)));
    }
    let hdr = H {
        flags: H::F_NEEDS_CSUM,
        gso_type: H::GSO_UDP_L4,
        hdr_len: 48,
        gso_size: 700,
        csum_start: 40,
        csum_offset: 6,
    };
    write("virtio_split", "uso6", &vnet(hdr, &udp6(&payload[..2000])));
    write("virtio_split", "plain", &vnet(H { flags: H::F_DATA_VALID, ..H::default() }, &udp4));

    // Received packets to coalesce: a TCP stream per family, UDP, and a mix.
    let packets = |ps: &[Vec<u8>]| ps.iter().flat_map(|p| record(0, p)[1..].to_vec()).collect::<Vec<u8>>();
    for (name, v6) in [("stream4", false), ("stream6", true)] {
        let segs: Vec<Vec<u8>> =
            (0..4u32).map(|k| tcp(v6, 100 + k * 500, if k == 3 { 0x18 } else { 0x10 }, &payload[..500])).collect();
        write("gro", name, &[&[3][..], &packets(&segs)].concat());
    }
    let udps: Vec<Vec<u8>> = (0..4).map(|_| udp6(&payload[..300])).collect();
    write("gro", "udp6", &[&[3][..], &packets(&udps)].concat());
    let mix =
        vec![tcp(false, 0, 0x10, &payload[..100]), udp4.clone(), tcp(false, 100, 0x10, &payload[..100]), vec![0x45; 3]];
    write("gro", "mix", &[&[1][..], &packets(&mix)].concat());
}
