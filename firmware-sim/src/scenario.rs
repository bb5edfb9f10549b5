//! Scenario files: which devices a simulated site has and what goes wrong.
//!
//! A scenario is TOML (examples in `firmware-sim/scenarios/`). Command line
//! flags override the broker address, duration, device count and QoS so a
//! scenario can be reused against different brokers. Validation happens here,
//! once, so the rest of the simulator works with values known to be sane.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::sensors::SensorKind;

/// Ring capacity: readings a device keeps while offline (a group's
/// `inflight` may not exceed it).
pub const RING: usize = 64;

/// Reading serialisation on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// Compact binary, as constrained firmware sends.
    Postcard,
    /// Human-readable JSON.
    Json,
}

/// A whole simulated site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seconds of reading generation (then devices drain their buffers).
    #[serde(default = "default_duration")]
    pub duration_secs: u64,
    /// Topics are `<topic_prefix>/<group>/<device>`.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// MQTT 5 instead of 3.1.1.
    #[serde(default)]
    pub mqtt5: bool,
    /// New connections per second while the fleet comes up.
    #[serde(default = "default_connect_rate")]
    pub connect_rate: u32,
    /// Device groups.
    #[serde(rename = "group")]
    pub groups: Vec<Group>,
    /// What goes wrong.
    #[serde(default)]
    pub faults: Faults,
}

/// Devices of one kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Group name, used in topics and client ids.
    pub name: String,
    /// Number of devices.
    pub devices: u32,
    /// Sensor on every device of the group.
    pub sensor: SensorKind,
    /// Mean time between readings.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Uniform jitter added to each interval, up to this many ms.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Reading encoding.
    #[serde(default = "default_format")]
    pub format: PayloadFormat,
    /// Pad payloads to at least this many bytes.
    #[serde(default)]
    pub payload_size: usize,
    /// Publish QoS (0 or 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Clean session; false = persistent session.
    #[serde(default = "default_true")]
    pub clean_session: bool,
    /// Publish an "offline" will on `<prefix>/status/<device>`.
    #[serde(default)]
    pub will: bool,
    /// First reconnect delay, doubling up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// Readings in flight before waiting for PUBACKs.
    #[serde(default = "default_inflight")]
    pub inflight: usize,
}

/// Fault injection; rates are per device per minute (Poisson).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Power cuts: socket dropped without DISCONNECT, RAM (unsent readings) lost.
    #[serde(default)]
    pub power_loss_per_min: f64,
    /// How long a device stays off after a power cut.
    #[serde(default = "default_off")]
    pub power_off_ms: u64,
    /// Network flaps: socket dropped, RAM kept, readings buffered meanwhile.
    #[serde(default)]
    pub network_flap_per_min: f64,
    /// How long the network stays down in a flap.
    #[serde(default = "default_off")]
    pub flap_down_ms: u64,
    /// Subscribers on the whole fleet that acknowledge slowly.
    #[serde(default)]
    pub slow_consumers: u32,
    /// Delay before each PUBACK of a slow consumer.
    #[serde(default = "default_slow_delay")]
    pub slow_consumer_delay_ms: u64,
}

fn default_duration() -> u64 {
    30
}
fn default_prefix() -> String {
    "sensors".into()
}
fn default_connect_rate() -> u32 {
    500
}
fn default_interval() -> u64 {
    1000
}
fn default_format() -> PayloadFormat {
    PayloadFormat::Postcard
}
fn default_qos() -> u8 {
    1
}
fn default_true() -> bool {
    true
}
fn default_reconnect_min() -> u64 {
    100
}
fn default_reconnect_max() -> u64 {
    5000
}
fn default_inflight() -> usize {
    8
}
fn default_off() -> u64 {
    1000
}
fn default_slow_delay() -> u64 {
    50
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        let scenario: Scenario = toml::from_str(&text)
            .with_context(|| format!("invalid scenario {}", path.display()))?;
        scenario
            .validate()
            .with_context(|| format!("invalid scenario {}", path.display()))?;
        Ok(scenario)
    }

    /// One group of temperature sensors, for runs without a scenario file.
    pub fn simple(devices: u32) -> Scenario {
        Scenario {
            duration_secs: default_duration(),
            topic_prefix: default_prefix(),
            mqtt5: false,
            connect_rate: default_connect_rate(),
            groups: vec![Group::temperature(devices)],
            faults: Faults::default(),
        }
    }

    /// Checks ranges that TOML types cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.groups.is_empty() {
            bail!("at least one [[group]] is required");
        }
        if self.connect_rate == 0 {
            bail!("connect_rate must be at least 1");
        }
        if !edgemq::protocol::topic::valid_topic_name(&self.topic_prefix) {
            bail!(
                "topic_prefix {:?} is not a valid topic name",
                self.topic_prefix
            );
        }
        for g in &self.groups {
            if g.qos > 1 {
                bail!("group {}: qos must be 0 or 1", g.name);
            }
            if g.interval_ms == 0 {
                bail!("group {}: interval_ms must be at least 1", g.name);
            }
            if g.inflight == 0 || g.inflight > RING {
                bail!("group {}: inflight must be 1..={}", g.name, RING);
            }
            if g.name.is_empty() || g.name.contains(['/', '+', '#']) {
                bail!("group name {:?} must be a plain topic level", g.name);
            }
        }
        let f = &self.faults;
        if !(f.power_loss_per_min >= 0.0 && f.network_flap_per_min >= 0.0) {
            bail!("fault rates must be >= 0");
        }
        Ok(())
    }

    /// Total number of devices.
    pub fn device_count(&self) -> u32 {
        self.groups.iter().map(|g| g.devices).sum()
    }
}

impl Group {
    /// `devices` temperature sensors with every default.
    pub fn temperature(devices: u32) -> Group {
        Group {
            name: "temp".into(),
            devices,
            sensor: SensorKind::Temperature,
            interval_ms: default_interval(),
            jitter_ms: 0,
            format: default_format(),
            payload_size: 0,
            qos: default_qos(),
            clean_session: true,
            will: false,
            reconnect_min_ms: default_reconnect_min(),
            reconnect_max_ms: default_reconnect_max(),
            inflight: default_inflight(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn example_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            Scenario::load(&path).unwrap();
            n += 1;
        }
        assert!(n >= 3);
    }

    #[test]
    fn simple_scenario_is_valid() {
        let s = Scenario::simple(10);
        s.validate().unwrap();
        assert_eq!(s.device_count(), 10);
        assert_eq!(s.groups[0].interval_ms, 1000);
    }

    #[test]
    fn bad_values_are_named() {
        let text = "[[group]]\nname = \"a\"\ndevices = 1\nsensor = \"gps\"\nqos = 2\n";
        let s: Scenario = toml::from_str(text).unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("qos"));
        let unknown = "[[group]]\nname = \"a\"\ndevices = 1\nsensor = \"gps\"\nbogus = 1\n";
        assert!(toml::from_str::<Scenario>(unknown).is_err());
    }
}
