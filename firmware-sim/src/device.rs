//! One simulated device: the firmware's RAM state and its main loop.
//!
//! The firmware keeps readings in a fixed-capacity ring (`heapless`) until
//! the broker acknowledges them, as a microcontroller would: nothing grows,
//! a long outage pushes the oldest readings out (counted). Each boot starts a
//! new sequence at 0; the boot counter lives in "flash" and survives power
//! cuts, so (device, boot, seq) names every reading uniquely.
//!
//! Invariants of [`Firmware`]:
//! - the first `in_flight` slots of the ring are sent and unacknowledged;
//! - a slot leaves the ring only when acknowledged (QoS 1), when sent
//!   (QoS 0), or when pushed out of a full ring while offline;
//! - after a reconnect every unacknowledged slot is sent again, with its
//!   packet id and DUP when it was sent before.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgemq::protocol::{
    Connect, ConnectProperties, LastWill, Packet, ProtocolVersion, Publish, QoS,
};
use heapless::Deque;
use tokio::time::sleep_until;

use crate::faults::{Fault, FaultPlan};
use crate::mqtt::{self, Conn};
use crate::report::Counters;
use crate::scenario::Group;
use crate::sensors::{Rng, Sensor, Value};
use crate::verify::AckLog;

use crate::reading::{encode, Reading};
use crate::scenario::RING;

#[derive(Debug, Clone, Copy)]
struct Slot {
    reading: Reading,
    pkid: u16,
    sent_before: bool,
    acked: bool,
}

/// The firmware's RAM: lost entirely at a power cut.
pub struct Firmware {
    ring: Deque<Slot, RING>,
    in_flight: usize,
    next_seq: u32,
    next_pkid: u16,
    boot: u16,
}

impl Firmware {
    /// Fresh RAM after boot number `boot`.
    pub fn boot(boot: u16) -> Firmware {
        Firmware {
            ring: Deque::new(),
            in_flight: 0,
            next_seq: 0,
            next_pkid: 0,
            boot,
        }
    }

    /// Readings held in RAM.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True when nothing waits to be sent or acknowledged.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Stores a new reading; returns true if the oldest had to be dropped.
    pub fn record(&mut self, device: u32, ts_ms: u64, value: Value) -> bool {
        let reading = Reading {
            device,
            boot: self.boot,
            seq: self.next_seq,
            ts_ms,
            value,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        let slot = Slot {
            reading,
            pkid: 0,
            sent_before: false,
            acked: false,
        };
        let mut dropped = false;
        if self.ring.is_full() {
            // Only happens offline (in_flight == 0): keep the newest data.
            self.ring.pop_front();
            self.in_flight = self.in_flight.saturating_sub(1);
            dropped = true;
        }
        // Cannot fail: there is room now.
        let _ = self.ring.push_back(slot);
        dropped
    }

    /// The next reading to send if the window allows: (reading, pkid, dup).
    /// For QoS 0 the reading leaves the ring at once.
    pub fn next_to_send(&mut self, qos: u8, window: usize) -> Option<(Reading, u16, bool)> {
        if qos == 0 {
            return self.ring.pop_front().map(|s| (s.reading, 0, false));
        }
        if self.in_flight >= window {
            return None;
        }
        let index = self.in_flight;
        let pkid = self.allocate_pkid_if_needed(index)?;
        let slot = self.ring.iter_mut().nth(index)?;
        let dup = slot.sent_before;
        slot.sent_before = true;
        self.in_flight += 1;
        Some((slot.reading, pkid, dup))
    }

    fn allocate_pkid_if_needed(&mut self, index: usize) -> Option<u16> {
        let current = self.ring.iter().nth(index)?.pkid;
        if current != 0 {
            return Some(current);
        }
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        let pkid = self.next_pkid;
        self.ring.iter_mut().nth(index)?.pkid = pkid;
        Some(pkid)
    }

    /// PUBACK: returns the acknowledged reading(s) now released from the ring.
    pub fn ack(&mut self, pkid: u16, released: &mut impl FnMut(Reading)) {
        if let Some(slot) = self
            .ring
            .iter_mut()
            .take(self.in_flight)
            .find(|s| s.pkid == pkid && !s.acked)
        {
            slot.acked = true;
        }
        while self.ring.front().is_some_and(|s| s.acked) {
            if let Some(slot) = self.ring.pop_front() {
                self.in_flight -= 1;
                released(slot.reading);
            }
        }
    }

    /// The connection dropped: everything in flight must be sent again.
    pub fn link_lost(&mut self) {
        self.in_flight = 0;
    }
}

/// Everything a device task needs.
pub struct DeviceConfig {
    /// Fleet-wide device number.
    pub id: u32,
    /// MQTT client id.
    pub client_id: String,
    /// Topic for readings.
    pub topic: String,
    /// Broker address.
    pub addr: String,
    /// MQTT 5 instead of 3.1.1.
    pub mqtt5: bool,
    /// The device's group settings.
    pub group: Group,
    /// Fault timing.
    pub faults: FaultPlan,
    /// Readings are taken until then.
    pub produce_until: Instant,
    /// The device gives up draining then.
    pub stop_at: Instant,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A running device: firmware RAM, the "flash" boot counter, the network.
struct Device {
    cfg: DeviceConfig,
    counters: Arc<Counters>,
    acks: Option<Arc<AckLog>>,
    rng: Rng,
    sensor: Sensor,
    boot: u16,
    fw: Firmware,
    conn: Option<Conn>,
    retry_at: Instant,
    backoff: Duration,
    next_reading: Instant,
    faults: FaultPlan,
    next_fault: Option<(Instant, Fault)>,
    ping_at: Instant,
}

const KEEPALIVE: Duration = Duration::from_secs(60);

/// Runs one device until its readings are drained or `stop_at`.
pub async fn run(cfg: DeviceConfig, counters: Arc<Counters>, acks: Option<Arc<AckLog>>) {
    let mut rng = Rng::new(u64::from(cfg.id).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let sensor = Sensor::new(cfg.group.sensor, &mut rng);
    let mut faults = cfg.faults.clone();
    let next_fault = faults.next(&mut rng);
    let now = Instant::now();
    let mut device = Device {
        next_reading: now + jitter(&cfg.group, &mut rng),
        backoff: Duration::from_millis(cfg.group.reconnect_min_ms),
        cfg,
        counters,
        acks,
        rng,
        sensor,
        boot: 0,
        fw: Firmware::boot(0),
        conn: None,
        retry_at: now,
        faults,
        next_fault,
        ping_at: now + KEEPALIVE / 2,
    };
    device.main_loop().await;
    device.shut_down().await;
}

impl Device {
    /// One event at a time: a reading, a fault, a connect attempt, a packet
    /// or a keepalive; after each, send what the window allows.
    async fn main_loop(&mut self) {
        loop {
            let now = Instant::now();
            let drained =
                now >= self.cfg.produce_until && self.fw.is_empty() && self.conn.is_some();
            if now >= self.cfg.stop_at || drained {
                return;
            }
            let producing = now < self.cfg.produce_until;
            let fault_at = self.next_fault.map_or(self.cfg.stop_at, |(at, _)| at);
            tokio::select! {
                _ = sleep_until(self.next_reading.into()), if producing => self.take_reading(),
                _ = sleep_until(fault_at.into()), if self.next_fault.is_some() && producing => self.inject_fault(),
                _ = sleep_until(self.retry_at.into()), if self.conn.is_none() => self.try_connect().await,
                packet = mqtt::next_on(&mut self.conn) => match packet {
                    Ok(packet) => self.on_packet(packet),
                    Err(e) => self.link_down(&e),
                },
                _ = sleep_until(self.ping_at.into()), if self.conn.is_some() => self.ping().await,
            }
            if let Err(e) = self.send_ready().await {
                self.link_down(&e);
            }
        }
    }

    fn take_reading(&mut self) {
        self.counters.readings.fetch_add(1, Relaxed);
        if self
            .fw
            .record(self.cfg.id, now_ms(), self.sensor.read(&mut self.rng))
        {
            self.counters.ring_overflow.fetch_add(1, Relaxed);
        }
        let interval = Duration::from_millis(self.cfg.group.interval_ms);
        self.next_reading += interval + jitter(&self.cfg.group, &mut self.rng);
    }

    /// Drops the socket without DISCONNECT; a power cut also loses RAM.
    fn inject_fault(&mut self) {
        let fault = self.next_fault.map(|(_, f)| f);
        self.next_fault = self.faults.next(&mut self.rng);
        if self.conn.take().is_some() {
            self.counters.connected.fetch_sub(1, Relaxed);
        }
        match fault {
            Some(Fault::PowerLoss { off }) => {
                self.counters.power_cuts.fetch_add(1, Relaxed);
                self.counters
                    .lost_in_power_cut
                    .fetch_add(self.fw.len() as u64, Relaxed);
                self.boot = self.boot.wrapping_add(1);
                self.fw = Firmware::boot(self.boot);
                self.retry_at = Instant::now() + off;
                self.next_reading = self.retry_at + jitter(&self.cfg.group, &mut self.rng);
            }
            Some(Fault::NetworkFlap { down }) => {
                self.counters.flaps.fetch_add(1, Relaxed);
                self.fw.link_lost();
                self.retry_at = Instant::now() + down;
            }
            None => {}
        }
    }

    async fn try_connect(&mut self) {
        match mqtt::connect(
            &self.cfg.addr,
            connect_packet(&self.cfg),
            Duration::from_secs(10),
        )
        .await
        {
            Ok((conn, _session_present)) => {
                // Resent either way: with a session as DUP with the same
                // packet id, without one as new publishes.
                self.fw.link_lost();
                self.conn = Some(conn);
                self.counters.connects.fetch_add(1, Relaxed);
                self.counters.connected.fetch_add(1, Relaxed);
                self.backoff = Duration::from_millis(self.cfg.group.reconnect_min_ms);
                self.ping_at = Instant::now() + KEEPALIVE / 2;
            }
            Err(e) => {
                tracing::debug!(device = self.cfg.id, error = %e, "connect failed");
                self.counters.connect_failures.fetch_add(1, Relaxed);
                self.schedule_retry();
            }
        }
    }

    /// Next attempt after the backoff plus up to 50% jitter; the backoff doubles.
    fn schedule_retry(&mut self) {
        let spread = self.rng.up_to(self.backoff.as_millis() as u64 / 2);
        self.retry_at = Instant::now() + self.backoff + Duration::from_millis(spread);
        let max = Duration::from_millis(self.cfg.group.reconnect_max_ms);
        self.backoff = (self.backoff * 2).min(max);
    }

    fn on_packet(&mut self, packet: Packet) {
        if let Packet::PubAck(ack) = packet {
            let (counters, acks) = (&self.counters, &self.acks);
            self.fw.ack(ack.pkid, &mut |r| {
                counters.acked.fetch_add(1, Relaxed);
                if let Some(log) = acks {
                    log.acked(r);
                }
            });
        }
    }

    fn link_down(&mut self, error: &anyhow::Error) {
        tracing::debug!(device = self.cfg.id, %error, "connection lost");
        if self.conn.take().is_some() {
            self.counters.disconnects.fetch_add(1, Relaxed);
            self.counters.connected.fetch_sub(1, Relaxed);
        }
        self.fw.link_lost();
        self.schedule_retry();
    }

    async fn ping(&mut self) {
        self.ping_at = Instant::now() + KEEPALIVE / 2;
        if let Some(conn) = self.conn.as_mut() {
            if let Err(e) = conn.send(&Packet::PingReq).await {
                self.link_down(&e);
            }
        }
    }

    /// Publishes what the in-flight window allows.
    async fn send_ready(&mut self) -> anyhow::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let g = &self.cfg.group;
        while let Some((reading, pkid, dup)) = self.fw.next_to_send(g.qos, g.inflight) {
            let publish = Publish {
                dup,
                qos: if g.qos == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                },
                retain: false,
                topic: self.cfg.topic.clone(),
                pkid,
                properties: Default::default(),
                payload: encode(reading, g.format, g.payload_size),
            };
            conn.send(&Packet::Publish(publish)).await?;
            self.counters.sent.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// End of the run: count what is left, say goodbye if connected.
    async fn shut_down(mut self) {
        self.counters
            .unsent_at_end
            .fetch_add(self.fw.len() as u64, Relaxed);
        if let Some(mut conn) = self.conn.take() {
            let _ = conn.send(&Packet::Disconnect(Default::default())).await;
            self.counters.connected.fetch_sub(1, Relaxed);
        }
    }
}

fn connect_packet(cfg: &DeviceConfig) -> Connect {
    let protocol = if cfg.mqtt5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let will = cfg.group.will.then(|| LastWill {
        topic: format!("status/{}", cfg.client_id),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    Connect {
        protocol,
        clean_start: cfg.group.clean_session,
        keep_alive: 60,
        client_id: cfg.client_id.clone(),
        will,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: (!cfg.group.clean_session && cfg.mqtt5).then_some(3600),
            ..Default::default()
        },
    }
}

fn jitter(g: &Group, rng: &mut Rng) -> Duration {
    Duration::from_millis(rng.up_to(g.jitter_ms))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
