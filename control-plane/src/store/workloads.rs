//! Persistence of the workload registry (see `discovery`): one row per registered
//! address:port, rewritten on every change, so a restarted control plane starts with the
//! view it had.

use std::net::IpAddr;
use std::time::SystemTime;

use rusqlite::params;
use spiffe::SpiffeId;

use super::{Store, StoreError, from_unix, to_unix};
use crate::discovery::Registration;

impl Store {
    /// Inserts or replaces the row for `reg`'s address and inbound port.
    pub fn save_workload(
        &self,
        reg: &Registration,
        last_seen: SystemTime,
    ) -> Result<(), StoreError> {
        let ports = reg
            .app_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO workloads
                   (address, inbound_port, spiffe_id, service, app_ports, proxy_version, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(address, inbound_port) DO UPDATE SET
                   spiffe_id = excluded.spiffe_id, service = excluded.service,
                   app_ports = excluded.app_ports, proxy_version = excluded.proxy_version,
                   last_seen = excluded.last_seen",
                params![
                    reg.address.to_string(),
                    reg.inbound_port,
                    reg.spiffe_id.to_string(),
                    reg.service,
                    ports,
                    reg.proxy_version,
                    to_unix(last_seen),
                ],
            )?;
            Ok(())
        })
    }

    /// Deletes the row for `address:port`.
    pub fn delete_workload(&self, address: IpAddr, port: u16) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM workloads WHERE address = ?1 AND inbound_port = ?2",
                params![address.to_string(), port],
            )?;
            Ok(())
        })
    }

    /// Every stored workload with its last-seen time.
    pub fn load_workloads(&self) -> Result<Vec<(Registration, SystemTime)>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(
                "SELECT address, inbound_port, spiffe_id, service, app_ports, proxy_version, last_seen
                   FROM workloads",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (address, port, id, service, ports, version, seen) = row?;
                let corrupt = |what: &str| StoreError::Corrupt(format!("workloads.{what} of {address}:{port}"));
                let reg = Registration {
                    address: address.parse().map_err(|_| corrupt("address"))?,
                    inbound_port: u16::try_from(port).map_err(|_| corrupt("inbound_port"))?,
                    spiffe_id: SpiffeId::new(&id).map_err(|_| corrupt("spiffe_id"))?,
                    service,
                    app_ports: ports
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| p.parse::<u16>().map_err(|_| corrupt("app_ports")))
                        .collect::<Result<_, _>>()?,
                    proxy_version: version,
                };
                out.push((reg, from_unix(seen)));
            }
            Ok(out)
        })
    }
}
