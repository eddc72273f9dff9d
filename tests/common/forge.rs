//! A forged WireGuard handshake initiation (the protocol paper, section 5.4.2): it claims a
//! peer's static public key (which is public) without that peer's private key. Its MAC1 is
//! valid (it needs only the responder's public key) and its claimed key decrypts, so it
//! passes every check made before the responder's own DH with the claimed key, and fails
//! there (the timestamp does not decrypt). Only the first part of the initiator's Noise IK
//! steps is done faithfully; the rest is noise of the right length.

use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac};
use boringtun::x25519::{PublicKey, StaticSecret};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::ChaCha20Poly1305;
use rand_core::{OsRng, RngCore};

const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
const LABEL_MAC1: &[u8] = b"mac1----";

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::default();
    for p in parts {
        Update::update(&mut h, p);
    }
    h.finalize_fixed().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <hmac::SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        Mac::update(&mut m, p);
    }
    m.finalize().into_bytes().into()
}

fn mac16(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut m = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(key).unwrap();
    Update::update(&mut m, data);
    m.finalize_fixed().into()
}

fn seal(key: &[u8; 32], plain: &[u8], aad: &[u8], out: &mut [u8]) {
    let cipher = ChaCha20Poly1305::new(key.into());
    let mut buf = plain.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(&[0u8; 12].into(), aad, &mut buf)
        .unwrap();
    out[..plain.len()].copy_from_slice(&buf);
    out[plain.len()..plain.len() + 16].copy_from_slice(&tag);
}

/// A 148-byte initiation to `responder` claiming to come from `claimed` (a public key).
pub fn forged_initiation(claimed: &[u8; 32], responder: &[u8; 32]) -> Vec<u8> {
    let mut msg = vec![0u8; 148];
    msg[0] = 1;
    msg[4..8].copy_from_slice(&OsRng.next_u32().to_le_bytes());
    let mut ck = hash(&[CONSTRUCTION]);
    let mut h = hash(&[&ck, IDENTIFIER]);
    h = hash(&[&h, responder]);
    let e = StaticSecret::random_from_rng(OsRng);
    let e_pub = PublicKey::from(&e);
    msg[8..40].copy_from_slice(e_pub.as_bytes());
    h = hash(&[&h, e_pub.as_bytes()]);
    ck = hmac(&hmac(&ck, &[e_pub.as_bytes()]), &[&[1]]);
    let shared = e.diffie_hellman(&PublicKey::from(*responder));
    let temp = hmac(&ck, &[shared.as_bytes()]);
    ck = hmac(&temp, &[&[1]]);
    let key = hmac(&temp, &[&ck, &[2]]);
    seal(&key, claimed, &h, &mut msg[40..88]);
    // The timestamp needs DH(claimed's private key, responder): unknown to a forger.
    OsRng.fill_bytes(&mut msg[88..116]);
    let mac1_key = hash(&[LABEL_MAC1, responder]);
    let mac1 = mac16(&mac1_key, &msg[..116]);
    msg[116..132].copy_from_slice(&mac1);
    msg
}
