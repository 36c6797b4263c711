#!/usr/bin/env python3
"""Summarise a callgrind profile: self cost (Ir, instructions executed) per function, grouped
into categories, and per unit of work.

Usage: cgtop.py CALLGRIND_OUT [UNITS] [UNIT_NAME] [TOP]

Parses the callgrind format itself (callgrind_annotate mis-attributes everything to `clone` after
`callgrind_control -z`, which profile.sh uses to exclude start-up). Self cost only: call lines
(`calls=`) carry inclusive costs and are skipped. Callgrind sees user space only: the kernel's
part (syscalls, loopback TCP) is not in these numbers.
"""
import collections, re, sys

CATEGORIES = [  # first match wins
    ("AEAD record encryption/decryption (AES-GCM)", r"aesni|gcm|aes_hw|aead_aes|Gcm|ghash|aes_nohw|vpaes"),
    ("handshake public-key crypto (P-256 ECDSA, X25519, ML-KEM, bignum)",
     r"nistz256|ecp_|p256|ec_GFp|curve25519|x25519|mlkem|ml_kem|keccak|sha3|bn_|beeu|ecdsa|EC_|BN_|ec_|fiat_|poly_"),
    ("hashing (SHA-2 transcript, HKDF/HMAC)", r"sha256|sha512|SHA256|SHA512|hmac|HMAC|hkdf|HKDF|sha1_"),
    ("certificate parsing/verification (webpki, x509-parser, der, spiffe)", r"webpki|x509_parser|der_parser|asn1_rs|\bder::|spiffe|ferrule_tls"),
    ("rustls (record layer, handshake state machine, buffers)", r"rustls::|<rustls|rustls_pki"),
    ("tokio-rustls glue", r"tokio_rustls"),
    ("tokio runtime, I/O driver, timers, sync", r"tokio::|<tokio|mio::"),
    ("HTTP/L7 (hyper, hyper-util client pool, http, httparse, h2, policy)", r"hyper|\bh2::|<h2::|\bhttp::|<http::|httparse|ferrule_policy|core::hash::sip|BuildHasher|want::|bytes::"),
    ("Ferrule proxy code (copy loop, inbound/outbound, detect, L7 handler)", r"ferrule_proxy"),
    ("tracing / metrics", r"tracing|prometheus"),
    ("memcpy/memset/memmove", r"mem(cpy|set|move|cmp)|__memcpy|__memset|__memmove"),
    ("malloc/free", r"malloc|_int_free|\bfree\b|cfree|realloc|calloc|tcache|unlink_chunk|malloc_consolidate|sysmalloc"),
    ("aws-lc RNG / other aws-lc", r"aws_lc|RAND_|CTR_DRBG|jent_|jitterentropy"),
    ("Rust std/core/alloc", r"^(std|core|alloc)::|<(std|core|alloc)::|<&|hashbrown"),
]


def parse(path):
    names, selfc = {}, collections.Counter()
    fn, skip = None, False
    for line in open(path, errors="replace"):
        if line.startswith("fn="):
            m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                fn = names.get(m.group(1), m.group(1))
            else:
                fn = line[3:].strip()
            continue
        if line.startswith("cfn="):
            m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m and m.group(2):
                names[m.group(1)] = m.group(2)
            continue
        if line.startswith("calls="):
            skip = True
            continue
        c = line[:1]
        if c and (c.isdigit() or c in "+-*"):
            if skip:
                skip = False
                continue
            parts = line.split()
            if len(parts) >= 2 and fn is not None:
                selfc[fn] += int(parts[1])
    return selfc


def category(fn):
    for name, rx in CATEGORIES:
        if re.search(rx, fn):
            return name
    return "other"


def main(path, units=None, unit_name="unit", top=25):
    selfc = parse(path)
    total = sum(selfc.values())
    units = float(units) if units else None
    per = (lambda v: f"{v / units:>10,.0f}") if units else (lambda v: "")
    print(f"# {path}\n# total {total:,} Ir" + (f" over {units:g} {unit_name}s = {total / units:,.0f} Ir per {unit_name}" if units else ""))
    cats = collections.Counter()
    for f, v in selfc.items():
        cats[category(f)] += v
    print(f"\n{'Ir':>14} {'share':>6} {'Ir/' + unit_name if units else '':>10}  category")
    for c, v in cats.most_common():
        print(f"{v:>14,} {100 * v / total:5.1f}% {per(v)}  {c}")
    print(f"\n{'Ir':>14} {'share':>6} {'Ir/' + unit_name if units else '':>10}  function (self)")
    for f, v in selfc.most_common(int(top)):
        print(f"{v:>14,} {100 * v / total:5.1f}% {per(v)}  {f[:140]}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(*sys.argv[1:5])
