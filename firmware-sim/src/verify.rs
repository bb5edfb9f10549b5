//! End-to-end verification: a subscriber that checks every reading the
//! broker acknowledged to a device arrives, by (device, boot, sequence).
//!
//! The verifier may watch the same broker or a second one (the cloud side of
//! a bridge, `--verify-host/--verify-port`). It keeps a persistent session so
//! that a broken verifier link does not itself lose messages.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context};
use edgemq::protocol::{Connect, Packet, ProtocolVersion, PubAck, QoS, Subscribe, SubscribeFilter};

use crate::mqtt::{self, Conn};
use crate::reading::{self, Reading};
use crate::report::{Latency, Verification};

type Key = (u32, u16, u32);

/// Latency samples kept (4 bytes each); later deliveries are still checked
/// but no longer sampled, so a long run cannot grow this without bound.
const MAX_LATENCY_SAMPLES: usize = 4 * 1024 * 1024;

fn key(r: &Reading) -> Key {
    (r.device, r.boot, r.seq)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Readings the broker acknowledged to devices.
#[derive(Debug, Default)]
pub struct AckLog {
    acked: Mutex<HashSet<Key>>,
}

impl AckLog {
    /// Records an acknowledged reading.
    pub fn acked(&self, r: Reading) {
        lock(&self.acked).insert(key(&r));
    }
}

#[derive(Debug, Default)]
struct Seen {
    delivered: HashSet<Key>,
    highest: HashMap<(u32, u16), u32>,
    duplicated: u64,
    out_of_order: u64,
    latencies: Vec<u32>,
}

impl Seen {
    fn record(&mut self, r: Reading, now_ms: u64) {
        if !self.delivered.insert(key(&r)) {
            self.duplicated += 1;
            return;
        }
        let highest = self.highest.entry((r.device, r.boot)).or_insert(r.seq);
        if r.seq < *highest {
            self.out_of_order += 1;
        }
        *highest = (*highest).max(r.seq);
        if self.latencies.len() < MAX_LATENCY_SAMPLES {
            let age = now_ms.saturating_sub(r.ts_ms).min(u64::from(u32::MAX));
            self.latencies.push(age as u32);
        }
    }
}

/// The verifying subscriber.
pub struct Verifier {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Verifier {
    /// Connects, subscribes to `filter` at QoS 1 and waits for the SUBACK.
    pub async fn start(addr: String, filter: String, mqtt5: bool) -> anyhow::Result<Verifier> {
        let client_id = format!("firmware-sim-verify-{}", std::process::id());
        let conn = subscribe(&addr, &client_id, &filter, mqtt5, true).await?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(read_loop(
            conn,
            addr,
            client_id,
            filter,
            mqtt5,
            seen.clone(),
        ));
        Ok(Verifier { seen, task })
    }

    /// Acknowledged readings not delivered (yet).
    pub fn missing(&self, acks: &AckLog) -> u64 {
        let seen = lock(&self.seen);
        lock(&acks.acked)
            .iter()
            .filter(|k| !seen.delivered.contains(k))
            .count() as u64
    }

    /// The verdict.
    pub fn result(&self, acks: &AckLog) -> Verification {
        let lost = self.missing(acks);
        let mut seen = lock(&self.seen);
        Verification {
            delivered: seen.delivered.len() as u64,
            lost,
            duplicated: seen.duplicated,
            out_of_order: seen.out_of_order,
            latency: Latency::from_samples(&mut seen.latencies),
        }
    }
}

async fn subscribe(
    addr: &str,
    client_id: &str,
    filter: &str,
    mqtt5: bool,
    first: bool,
) -> anyhow::Result<Conn> {
    let connect = Connect {
        protocol: if mqtt5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        },
        // A session that outlives the connection: v5 starts clean and keeps it
        // by expiry; 3.1.1 needs clean session off from the start.
        clean_start: first && mqtt5,
        keep_alive: 0,
        client_id: client_id.to_string(),
        will: None,
        username: None,
        password: None,
        properties: edgemq::protocol::ConnectProperties {
            session_expiry_interval: mqtt5.then_some(3600),
            ..Default::default()
        },
    };
    let (mut conn, _) = mqtt::connect(addr, connect, Duration::from_secs(10))
        .await
        .with_context(|| format!("verifier cannot connect to {addr}"))?;
    let sub = Subscribe {
        pkid: 1,
        properties: Default::default(),
        filters: vec![SubscribeFilter::new(filter, QoS::AtLeastOnce)],
    };
    conn.send(&Packet::Subscribe(sub)).await?;
    loop {
        match conn.next().await? {
            Packet::SubAck(ack) if ack.reason_codes.iter().all(|c| *c < 0x80) => return Ok(conn),
            Packet::SubAck(ack) => bail!("verifier subscription refused: {:?}", ack.reason_codes),
            _ => {}
        }
    }
}

async fn read_loop(
    mut conn: Conn,
    addr: String,
    id: String,
    filter: String,
    mqtt5: bool,
    seen: Arc<Mutex<Seen>>,
) {
    loop {
        match conn.next().await {
            Ok(Packet::Publish(p)) => {
                if let Some(r) = reading::decode(&p.payload) {
                    lock(&seen).record(r, now_ms());
                }
                if p.pkid != 0 {
                    let ack = PubAck {
                        pkid: p.pkid,
                        reason_code: 0,
                        properties: Default::default(),
                    };
                    if conn.send(&Packet::PubAck(ack)).await.is_err() {
                        conn = reconnect(&addr, &id, &filter, mqtt5).await;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "verifier connection lost, reconnecting");
                conn = reconnect(&addr, &id, &filter, mqtt5).await;
            }
        }
    }
}

async fn reconnect(addr: &str, id: &str, filter: &str, mqtt5: bool) -> Conn {
    loop {
        match subscribe(addr, id, filter, mqtt5, false).await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(error = %e, "verifier reconnect failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::Value;

    fn r(device: u32, boot: u16, seq: u32) -> Reading {
        Reading {
            device,
            boot,
            seq,
            ts_ms: 0,
            value: Value::Humidity(1.0),
        }
    }

    #[test]
    fn duplicates_and_reordering_are_counted() {
        let mut seen = Seen::default();
        for x in [
            r(1, 0, 0),
            r(1, 0, 2),
            r(1, 0, 1),
            r(1, 0, 2),
            r(1, 1, 0),
            r(2, 0, 0),
        ] {
            seen.record(x, 10);
        }
        assert_eq!(
            (seen.delivered.len(), seen.duplicated, seen.out_of_order),
            (5, 1, 1)
        );
    }
}
