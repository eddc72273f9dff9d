//! The TUN device's queues against a real kernel, inside a throw-away network namespace (root
//! only; see `common::require_root`): the kernel spreads flows over the queues, a device is
//! re-attached with another queue count, and a device an earlier version made without
//! multi-queue is used with one queue.

mod common;

use common::Netns;
use sdn_tunnel::tunnel::offload::VNET_HDR_LEN;
use sdn_tunnel::tunnel::tun::{Offloads, Tun};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `ip <args>` in the calling thread's network namespace.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the kernel has processed the carrier change of (re-)attaching a queue: until
/// then the device's qdisc drops everything (the link watcher defers that work by up to 1 s).
fn wait_operstate_up(dev: &str) {
    // (This thread's /sys is the host namespace's; ask rtnetlink through `ip`.)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("ip")
            .args(["-o", "link", "show", dev])
            .output();
        let state = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string());
        let state = state.unwrap_or_default();
        // Carrier on and the real qdisc in place (`noop` drops everything).
        if state.contains("LOWER_UP")
            && !state.contains("qdisc noop")
            && !state.contains("state DOWN")
        {
            return;
        }
        assert!(Instant::now() < deadline, "{dev} not up after 5 s: {state}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// UDP datagrams to port 9 read from each queue within `wait` (after their vnet headers).
fn udp_to_discard_per_queue(queues: &[Tun], want: usize, wait: Duration) -> Vec<usize> {
    let mut counts = vec![0; queues.len()];
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + wait;
    while counts.iter().sum::<usize>() < want && Instant::now() < deadline {
        let mut any = false;
        for (q, tun) in queues.iter().enumerate() {
            while let Ok(n) = tun.read(&mut buf) {
                any = true;
                let pkt = &buf[VNET_HDR_LEN..n];
                // IPv4, UDP, destination port 9 (other traffic, e.g. IPv6 MLD, is not ours).
                if pkt.len() >= 28 && pkt[0] >> 4 == 4 && pkt[9] == 17 && pkt[22..24] == [0, 9] {
                    counts[q] += 1;
                }
            }
        }
        if !any {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    counts
}

#[test]
fn flows_spread_over_queues_and_devices_reattach() {
    if !common::require_root() {
        return;
    }
    let ns = Netns::new("sdn-tunq");
    ns.run_in(|| {
        let opened = Tun::create("mq0", true, 2).expect("create mq0");
        assert_eq!(opened.queues.len(), 2);
        assert!(!opened.single_queue_device);
        assert_eq!(opened.offloads, Offloads::On);
        ip(&["addr", "add", "10.99.0.1/24", "dev", "mq0"]);
        ip(&["link", "set", "mq0", "up"]);
        wait_operstate_up("mq0");

        // 64 flows (one source port each): the kernel hashes each to one queue.
        let senders: Vec<UdpSocket> = (0..64)
            .map(|_| UdpSocket::bind("10.99.0.1:0").unwrap())
            .collect();
        for s in &senders {
            s.send_to(b"x", "10.99.0.2:9").unwrap();
        }
        let counts = udp_to_discard_per_queue(&opened.queues, 64, Duration::from_secs(5));
        assert_eq!(
            counts.iter().sum::<usize>(),
            64,
            "datagrams lost: {counts:?}"
        );
        // All 64 on one queue: probability 2^-63.
        assert!(
            counts.iter().all(|&c| c > 0),
            "one queue got all: {counts:?}"
        );

        // The agent restarts with one queue, then with four: the persistent device takes both.
        drop(opened);
        let one = Tun::create("mq0", true, 1).expect("re-attach with one queue");
        assert_eq!((one.queues.len(), one.single_queue_device), (1, false));
        drop(one);
        let four = Tun::create("mq0", true, 4).expect("re-attach with four queues");
        assert_eq!(four.queues.len(), 4);
        wait_operstate_up("mq0");
        for s in &senders {
            s.send_to(b"y", "10.99.0.2:9").unwrap();
        }
        let counts = udp_to_discard_per_queue(&four.queues, 64, Duration::from_secs(5));
        assert_eq!(
            counts.iter().sum::<usize>(),
            64,
            "datagrams lost: {counts:?}"
        );
        drop(four);

        // A device made without multi-queue (an earlier version, or `ip tuntap`): one queue,
        // said so, offloads still on.
        ip(&["tuntap", "add", "dev", "sq0", "mode", "tun"]);
        let old = Tun::create("sq0", true, 2).expect("attach to a single-queue device");
        assert!(old.single_queue_device);
        assert_eq!(old.queues.len(), 1);
        assert_eq!(old.offloads, Offloads::On);
        drop(old);

        // Offloads off on a multi-queue device (the setting is the device's, not a queue's).
        let off = Tun::create("mq0", false, 2).expect("re-attach without offloads");
        assert_eq!((off.queues.len(), off.offloads.clone()), (2, Offloads::Off));
        assert!(!off.queues[0].vnet_hdr() && !off.queues[1].vnet_hdr());
    });
}
