#!/usr/bin/env python3
"""Recomputes the version-2 test vectors of docs/protocol.md from the page's description alone,
with independent implementations: kyber-py (a pure-Python FIPS 203 ML-KEM) and `cryptography`
(X25519, Ed25519, SHA-256, HMAC). Not part of any test tier (it needs those two packages):

    python3 -m venv /tmp/v && /tmp/v/bin/pip install kyber-py==1.2.0 cryptography
    /tmp/v/bin/python crates/kex/tests/recompute_vectors.py

It prints "ok <vector>" for every version-2 vector whose outputs match, and fails otherwise.
"""
import hashlib
import hmac
import pathlib
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives import serialization
from kyber_py.ml_kem import ML_KEM_768

RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw
SUITES = {"aes-gcm-128": (1, 20), "aes-gcm-256": (2, 36), "chacha20-poly1305": (3, 36)}
GROUPS = {"x25519": 1, "x25519-mlkem768": 2, "p256-mlkem768": 3}
LABEL = b"cipherlane-kex-v2"


def vectors():
    text = (pathlib.Path(__file__).parents[3] / "docs" / "protocol.md").read_text()
    out = {}
    for block in text.split("```text vector:")[1:]:
        name, body = block.split("\n", 1)
        fields = {}
        for line in body.split("```", 1)[0].splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                fields[k.strip()] = v.strip()
        out[name.strip()] = fields
    return out


def hkdf_expand(prk, info, length):
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


def name(n):
    return bytes([len(n)]) + n.encode()


def groups(v, key):
    codes = [GROUPS[g.strip()] for g in v[key].split(",")]
    return bytes([len(codes)] + codes)


def check(vname, v):
    b = bytes.fromhex
    group = v["group"]
    suite_code, keymat = SUITES[v["suite"]]
    xa = X25519PrivateKey.from_private_bytes(b(v["ephemeral_private_a"]))
    xb = X25519PrivateKey.from_private_bytes(b(v["ephemeral_private_b"]))
    xa_pub, xb_pub = xa.public_key().public_bytes(*RAW), xb.public_key().public_bytes(*RAW)
    got = {}
    if group == "x25519-mlkem768":
        seed = b(v["mlkem_seed_a"])
        ek, dk = ML_KEM_768._keygen_internal(seed[:32], seed[32:])
        ss_kem, ct = ML_KEM_768._encaps_internal(ek, b(v["mlkem_randomness_b"]))
        assert ML_KEM_768.decaps(dk, ct) == ss_kem
        ss_x = xa.exchange(X25519PublicKey.from_public_bytes(xb_pub))
        share_a, share_b = ek + xa_pub, ct + xb_pub          # ML-KEM first, as X25519MLKEM768
        shared = ss_kem + ss_x                                # ML-KEM secret first
        got.update(mlkem_ek_a_sha256=hashlib.sha256(ek).hexdigest(),
                   mlkem_ct_b_sha256=hashlib.sha256(ct).hexdigest(),
                   mlkem_shared_secret=ss_kem.hex(), x25519_shared_secret=ss_x.hex())
    elif group == "x25519":
        share_a, share_b = xa_pub, xb_pub
        shared = xa.exchange(X25519PublicKey.from_public_bytes(xb_pub))
    else:
        raise SystemExit(f"{vname}: group {group} not covered here")
    ida = Ed25519PrivateKey.from_private_bytes(b(v["identity_seed_a"]))
    idb = Ed25519PrivateKey.from_private_bytes(b(v["identity_seed_b"]))
    gcode = bytes([GROUPS[group]])
    init_u = (bytes([2, 1]) + name(v["initiator"]) + name(v["responder"])
              + int(v["epoch"]).to_bytes(8, "big") + bytes([suite_code])
              + gcode + groups(v, "groups_a") + len(share_a).to_bytes(2, "big") + share_a
              + b(v["nonce_a"]) + b(v["spi_a"]) + int(v["timestamp_ms"]).to_bytes(8, "big"))
    h1 = hashlib.sha256(LABEL + init_u).digest()
    init = init_u + ida.sign(b"cipherlane-kex-v2 initiator signature" + h1)
    resp_u = (bytes([2, 2]) + gcode + groups(v, "groups_b") + len(share_b).to_bytes(2, "big")
              + share_b + b(v["nonce_b"]) + b(v["spi_b"]))
    h2 = hashlib.sha256(LABEL + init + resp_u).digest()
    resp = resp_u + idb.sign(b"cipherlane-kex-v2 responder signature" + h2)
    h3 = hashlib.sha256(LABEL + init + resp).digest()
    prk = hmac.new(b(v["nonce_a"]) + b(v["nonce_b"]), shared, hashlib.sha256).digest()
    k_ir = hkdf_expand(prk, LABEL + b" esp initiator->responder" + h3, keymat)
    k_ri = hkdf_expand(prk, LABEL + b" esp responder->initiator" + h3, keymat)
    k_conf = hkdf_expand(prk, LABEL + b" confirm" + h3, 32)
    mac = hmac.new(k_conf, h3, hashlib.sha256).digest()
    got.update(
        identity_public_a=ida.public_key().public_bytes(*RAW).hex(),
        identity_public_b=idb.public_key().public_bytes(*RAW).hex(),
        ephemeral_public_a=xa_pub.hex(), ephemeral_public_b=xb_pub.hex(),
        shared_secret=shared.hex(), init_len=str(len(init)),
        init_sha256=hashlib.sha256(init).hexdigest(), init_signature=init[-64:].hex(),
        h1=h1.hex(), response_len=str(len(resp)), response_sha256=hashlib.sha256(resp).hexdigest(),
        response_signature=resp[-64:].hex(), h2=h2.hex(), h3=h3.hex(),
        key_initiator_to_responder=k_ir.hex(), key_responder_to_initiator=k_ri.hex(),
        confirm_key=k_conf.hex(), confirm=(bytes([2, 3]) + mac).hex())
    bad = [k for k, val in got.items() if v.get(k) != val]
    if bad:
        raise SystemExit(f"{vname}: differs from docs/protocol.md in {bad}")
    print("ok", vname)


for vname, v in vectors().items():
    if v.get("version") == "2":
        check(vname, v)
