//! The mesh session's messages (`Mesh/Sync`), both ends, decoded with prost and then
//! validated by the code each side runs:
//!
//! * byte 0 even: a `ControlMessage` as a proxy receives it (`snapshot_from_pb`,
//!   `policy_from_pb` in `proxy/src/control/sync.rs`);
//! * byte 0 odd: a `ProxyMessage` as the control plane receives it from a proxy that
//!   proved `spiffe://fuzz.test/ns/default/sa/web` from 10.1.2.3
//!   (`registration_from_pb` in `control-plane/src/mesh_api.rs`, then the registry).
//!
//! Invariants:
//! * a snapshot a proxy accepts indexes every workload under each of its (canonical)
//!   addresses, and serves endpoints only with the identity registered for them;
//! * a registration the control plane accepts is for the caller's own identity, at the
//!   address it connects from, under the service name bound to that identity, with no
//!   port 0; and the discovery snapshot that results is one every proxy accepts
//!   (otherwise one bad registration would freeze discovery mesh-wide);
//! * an accepted policy carries its version and mesh default.
#![no_main]

use std::net::IpAddr;
use std::time::Duration;

use ferrule_control_plane::discovery::Registry;
use ferrule_control_plane::mesh_api::{discovery_pb, registration_from_pb};
use ferrule_proto::mesh::v1 as pb;
use ferrule_proxy::control::sync::{policy_from_pb, snapshot_from_pb};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use spiffe::SpiffeId;

const CALLER: &str = "spiffe://fuzz.test/ns/default/sa/web";

fn proxy_side(body: &[u8]) {
    let Ok(msg) = pb::ControlMessage::decode(body) else {
        return;
    };
    match msg.msg {
        Some(pb::control_message::Msg::Discovery(d)) => {
            let wire = d.clone();
            let Ok(snap) = snapshot_from_pb(d) else {
                return;
            };
            assert_eq!(snap.version, wire.version);
            assert_eq!(snap.len(), wire.workloads.len());
            for w in &wire.workloads {
                for a in &w.addresses {
                    let ip: IpAddr = a.parse().expect("accepted address parses");
                    let ip = ip.to_canonical();
                    assert!(snap.by_ip(ip).is_some(), "{ip} not indexed");
                }
                let port = u16::try_from(w.app_ports.first().copied().unwrap_or(80)).expect("port");
                for (_, id) in snap.endpoints(&w.service, port) {
                    assert!(
                        wire.workloads.iter().any(|x| x.service == w.service
                            && SpiffeId::new(&x.spiffe_id).as_ref() == Ok(&id)),
                        "endpoint of {} with identity {id} nobody registered",
                        w.service
                    );
                }
            }
        }
        Some(pb::control_message::Msg::Policy(p)) => {
            let (version, default) = (p.version, p.mesh_default.clone());
            if let Ok(set) = policy_from_pb(p) {
                assert_eq!(set.version(), version);
                assert_eq!(set.mesh_default().as_str(), default);
            }
        }
        None => {}
    }
}

fn control_plane_side(body: &[u8]) {
    let Ok(msg) = pb::ProxyMessage::decode(body) else {
        return;
    };
    let Some(pb::proxy_message::Msg::Register(r)) = msg.msg else {
        return;
    };
    let caller = SpiffeId::new(CALLER).expect("id");
    let remote: IpAddr = [10, 1, 2, 3].into();
    let Ok(reg) = registration_from_pb(r, &caller, remote) else {
        return;
    };
    assert_eq!(reg.spiffe_id, caller);
    assert_eq!(reg.address, remote);
    assert_eq!(reg.service, "web", "service not bound to the identity");
    let registry = Registry::new(Duration::from_secs(60));
    if registry.register(reg.clone(), None).is_err() {
        return;
    }
    assert!(reg.inbound_port != 0 && !reg.app_ports.contains(&0));
    let wire = discovery_pb(&registry.snapshot());
    let snap = snapshot_from_pb(wire).expect("proxies refuse what the control plane accepted");
    let w = snap.by_ip(remote).expect("registered workload is indexed");
    assert_eq!(w.spiffe_id, caller);
    assert_eq!(w.inbound_port, reg.inbound_port);
}

fuzz_target!(|data: &[u8]| {
    let Some((&side, body)) = data.split_first() else {
        return;
    };
    if side % 2 == 0 {
        proxy_side(body);
    } else {
        control_plane_side(body);
    }
});
