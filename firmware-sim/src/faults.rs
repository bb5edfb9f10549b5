//! Fault injection: power cuts and network flaps on a device's own timeline
//! (Poisson arrivals, seeded per device), and slow consumers that make the
//! broker queue for subscribers that acknowledge late.

use std::time::{Duration, Instant};

use edgemq::protocol::{Connect, Packet, ProtocolVersion, PubAck, QoS, Subscribe, SubscribeFilter};

use crate::mqtt;
use crate::scenario::Faults;
use crate::sensors::Rng;

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Socket dropped without DISCONNECT, RAM lost, device off for `off`.
    PowerLoss {
        /// Time without power.
        off: Duration,
    },
    /// Socket dropped, RAM kept, network back after `down`.
    NetworkFlap {
        /// Time without network.
        down: Duration,
    },
}

/// When a device's next fault happens.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    power_per_min: f64,
    off: Duration,
    flap_per_min: f64,
    down: Duration,
}

impl FaultPlan {
    /// The plan for a scenario's fault settings.
    pub fn new(f: &Faults) -> FaultPlan {
        FaultPlan {
            power_per_min: f.power_loss_per_min,
            off: Duration::from_millis(f.power_off_ms),
            flap_per_min: f.network_flap_per_min,
            down: Duration::from_millis(f.flap_down_ms),
        }
    }

    /// The next fault from now, the earlier of the two processes; None if
    /// faults are off.
    pub fn next(&mut self, rng: &mut Rng) -> Option<(Instant, Fault)> {
        let now = Instant::now();
        let power = rng.poisson_ms(self.power_per_min).map(|ms| {
            (
                now + Duration::from_millis(ms),
                Fault::PowerLoss { off: self.off },
            )
        });
        let flap = rng.poisson_ms(self.flap_per_min).map(|ms| {
            (
                now + Duration::from_millis(ms),
                Fault::NetworkFlap { down: self.down },
            )
        });
        match (power, flap) {
            (Some(p), Some(f)) => Some(if p.0 <= f.0 { p } else { f }),
            (p, f) => p.or(f),
        }
    }
}

/// A subscriber on `filter` that waits `delay` before each PUBACK, until `stop_at`.
pub async fn slow_consumer(
    addr: String,
    id: u32,
    filter: String,
    delay: Duration,
    stop_at: Instant,
) {
    let connect = Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 0,
        client_id: format!("slow-consumer-{id}"),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    };
    let Ok((mut conn, _)) = mqtt::connect(&addr, connect, Duration::from_secs(10)).await else {
        tracing::warn!(id, "slow consumer could not connect");
        return;
    };
    let subscribe = Subscribe {
        pkid: 1,
        properties: Default::default(),
        filters: vec![SubscribeFilter::new(filter, QoS::AtLeastOnce)],
    };
    if conn.send(&Packet::Subscribe(subscribe)).await.is_err() {
        return;
    }
    while Instant::now() < stop_at {
        let next = tokio::time::timeout_at(stop_at.into(), conn.next()).await;
        match next {
            Ok(Ok(Packet::Publish(p))) if p.pkid != 0 => {
                tokio::time::sleep(delay).await;
                let ack = PubAck {
                    pkid: p.pkid,
                    reason_code: 0,
                    properties: Default::default(),
                };
                if conn.send(&Packet::PubAck(ack)).await.is_err() {
                    return;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rates_no_faults() {
        let mut plan = FaultPlan::new(&Faults::default());
        assert!(plan.next(&mut Rng::new(1)).is_none());
    }

    #[test]
    fn both_kinds_happen() {
        let faults = Faults {
            power_loss_per_min: 10.0,
            network_flap_per_min: 10.0,
            ..Default::default()
        };
        let mut plan = FaultPlan::new(&faults);
        let mut rng = Rng::new(3);
        let kinds: Vec<_> = (0..200)
            .filter_map(|_| plan.next(&mut rng))
            .map(|(_, f)| f)
            .collect();
        assert!(kinds.iter().any(|f| matches!(f, Fault::PowerLoss { .. })));
        assert!(kinds.iter().any(|f| matches!(f, Fault::NetworkFlap { .. })));
    }
}
