//! Only authenticated packets change a peer (root, netns lab). A third host on the underlay
//! floods node a1 with forged handshake initiations that claim to come from peer b1 (its
//! public key is public; tests/common/forge.rs), from a spoofed source address: enough to put
//! a1's handshake rate limiter under load, which is when a message earns a *cookie reply*
//! (sent before any authentication). a1 must neither move b1's endpoint to the forger nor
//! count a handshake; b1 keeps working.

mod common;

use rand_core::RngCore;
use sdn_lab::{in_netns, Lab, LabOptions};
use sdn_tunnel::keys;
use std::net::Ipv4Addr;
use std::time::Duration;

const FORGER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 99);

/// Sends `packets` (whole IPv4 packets, source spoofed) with a raw socket.
fn send_raw(dst: Ipv4Addr, packets: &[Vec<u8>]) -> usize {
    // SAFETY: plain socket calls with valid buffers and a sockaddr_in of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_addr.s_addr = u32::from(dst).to_be();
        let mut sent = 0;
        for p in packets {
            let n = libc::sendto(
                fd,
                p.as_ptr() as *const libc::c_void,
                p.len(),
                0,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            if n > 0 {
                sent += 1;
            }
        }
        libc::close(fd);
        sent
    }
}

fn a1_status(lab: &Lab) -> serde_json::Value {
    serde_json::from_str(&lab.status("a1", true)).expect("status --json")
}

fn b1_endpoint(lab: &Lab) -> String {
    let s = a1_status(lab);
    s["agent"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "b1")
        .map(|p| p["endpoint"].as_str().unwrap_or_default().to_string())
        .expect("a1 has peer b1")
}

#[test]
fn forged_handshakes_from_a_spoofed_source_do_not_move_an_endpoint() {
    if !common::require_root() {
        return;
    }
    let lab = Lab::up(LabOptions {
        bin: Some(env!("CARGO_BIN_EXE_sdn-tunnel").into()),
        ..LabOptions::default()
    })
    .expect("lab up");
    lab.wait_connected(Duration::from_secs(30))
        .expect("connected");
    let real = lab.endpoint("b1");
    assert_eq!(b1_endpoint(&lab), real);
    let before = a1_status(&lab)["agent"]["counters"].clone();

    // Initiations claiming b1's key, forged without it.
    let b1_pub = keys::parse_key(&lab.public_key("b1")).unwrap();
    let a1_pub = keys::parse_key(&lab.public_key("a1")).unwrap();
    // The forgery is good enough to matter: a1 reads b1's key out of it (with a1's own
    // private key, as the agent does before its DH with b1's key fails).
    {
        use boringtun::noise::{handshake::parse_handshake_anon, Packet, Tunn};
        use boringtun::x25519::{PublicKey, StaticSecret};
        let a1_priv = keys::read_private_key_file(&lab.private_key_file("a1")).unwrap();
        let init = common::forge::forged_initiation(&b1_pub, &a1_pub);
        let Ok(Packet::HandshakeInit(p)) = Tunn::parse_incoming_packet(&init) else {
            panic!("not an initiation")
        };
        let half = parse_handshake_anon(&StaticSecret::from(a1_priv), &PublicKey::from(a1_pub), &p)
            .expect("the forged initiation decrypts");
        assert_eq!(half.peer_static_public, b1_pub);
    }
    let a1 = lab.node_underlay_ip("a1");
    let port = lab.node("a1").listen_port;
    // About half of them claim a key a1 does not know: checked once and dropped, they shift
    // where in the rate limiter's count the b1 claims land at random (a limiter that counted
    // each b1 claim twice would then see one of them first when it is already under load,
    // once in about two of its one-second periods).
    let stranger = keys::public_from_private(&keys::generate_private());
    let packets: Vec<Vec<u8>> = (0..3000)
        .map(|i| {
            let claimed = if rand_core::OsRng.next_u32() % 2 == 0 {
                &stranger
            } else {
                &b1_pub
            };
            let init = common::forge::forged_initiation(claimed, &a1_pub);
            common::packet::ipv4_udp(FORGER, 40000 + (i % 100) as u16, a1, port, &init)
        })
        .collect();
    // The forger: a host on the underlay bridge.
    let u = lab.underlay_ns().to_string();
    lab.exec_ok(
        &u,
        &["ip", "addr", "add", "192.168.77.250/24", "dev", "br0"],
    )
    .unwrap();
    // Ten bursts, one per rate-limiter period (it resets every second).
    let mut sent = 0;
    for _ in 0..10 {
        sent += in_netns(&u, || send_raw(a1, &packets)).unwrap();
        std::thread::sleep(Duration::from_millis(1000));
    }
    assert!(sent > 25_000, "sent only {sent}");
    std::thread::sleep(Duration::from_secs(1));

    let after = a1_status(&lab)["agent"]["counters"].clone();
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert!(
        delta("droppedRateLimited") > 0,
        "the flood never put the limiter under load: {after}"
    );
    assert_eq!(
        b1_endpoint(&lab),
        real,
        "b1's endpoint moved to the forger: counters {after}\n{}",
        lab.agent_log("a1")
    );
    assert!(
        !lab.agent_log("a1").contains(&FORGER.to_string()),
        "the log mentions the forger:\n{}",
        lab.agent_log("a1")
    );
    // A replayed initiation is no handshake: at most b1's own (keepalive-driven) ones count.
    assert!(
        delta("handshakesCompleted") < 5,
        "handshakes counted during the flood: {}",
        delta("handshakesCompleted")
    );
    // b1 still works.
    lab.wait_connected(Duration::from_secs(30))
        .expect("connected after the flood");
}
