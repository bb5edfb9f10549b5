//! Sensor models: plausible values that drift, so payloads compress and
//! look like a real site's, from a seeded generator so runs are repeatable.

use serde::{Deserialize, Serialize};

/// The sensor kinds a group can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorKind {
    /// Degrees Celsius.
    Temperature,
    /// Relative humidity in percent.
    Humidity,
    /// Vibration RMS and peak in g.
    Vibration,
    /// Power meter: watts and cumulative kWh.
    Power,
    /// GPS position of a moving asset.
    Gps,
}

/// One measured value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Degrees Celsius.
    Temperature(f32),
    /// Percent.
    Humidity(f32),
    /// RMS and peak acceleration in g.
    Vibration {
        /// Root mean square.
        rms: f32,
        /// Peak.
        peak: f32,
    },
    /// Power meter.
    Power {
        /// Instantaneous watts.
        watts: f32,
        /// Energy counter.
        kwh: f64,
    },
    /// Position.
    Gps {
        /// Latitude, degrees.
        lat: f64,
        /// Longitude, degrees.
        lon: f64,
    },
}

/// SplitMix64: tiny, fast, good enough for simulation noise and fault timing.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n]; 0 when n is 0.
    pub fn up_to(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % (n + 1)
        }
    }

    /// Exponentially distributed delay (ms) for a Poisson process with
    /// `per_min` events per minute; None when the rate is 0.
    pub fn poisson_ms(&mut self, per_min: f64) -> Option<u64> {
        if per_min <= 0.0 {
            return None;
        }
        let mean_ms = 60_000.0 / per_min;
        Some((-(1.0 - self.unit()).ln() * mean_ms) as u64)
    }
}

/// A sensor with its drifting state.
#[derive(Debug, Clone)]
pub struct Sensor {
    kind: SensorKind,
    level: f64,
    energy: f64,
    position: (f64, f64),
}

impl Sensor {
    /// A sensor starting at a plausible level.
    pub fn new(kind: SensorKind, rng: &mut Rng) -> Sensor {
        let level = match kind {
            SensorKind::Temperature => 18.0 + 6.0 * rng.unit(),
            SensorKind::Humidity => 35.0 + 30.0 * rng.unit(),
            SensorKind::Vibration => 0.05 + 0.1 * rng.unit(),
            SensorKind::Power => 200.0 + 2000.0 * rng.unit(),
            SensorKind::Gps => 0.0,
        };
        Sensor {
            kind,
            level,
            energy: 1000.0 * rng.unit(),
            position: (48.0 + rng.unit(), 11.0 + rng.unit()),
        }
    }

    /// Takes one reading, advancing the drift.
    pub fn read(&mut self, rng: &mut Rng) -> Value {
        let noise = rng.unit() - 0.5;
        match self.kind {
            SensorKind::Temperature => {
                self.level = (self.level + 0.1 * noise).clamp(-40.0, 85.0);
                Value::Temperature(self.level as f32)
            }
            SensorKind::Humidity => {
                self.level = (self.level + 0.5 * noise).clamp(0.0, 100.0);
                Value::Humidity(self.level as f32)
            }
            SensorKind::Vibration => {
                self.level = (self.level + 0.01 * noise).clamp(0.0, 16.0);
                let peak = self.level * (2.5 + rng.unit());
                Value::Vibration {
                    rms: self.level as f32,
                    peak: peak as f32,
                }
            }
            SensorKind::Power => {
                self.level = (self.level + 50.0 * noise).max(0.0);
                self.energy += self.level / 3.6e6;
                Value::Power {
                    watts: self.level as f32,
                    kwh: self.energy,
                }
            }
            SensorKind::Gps => {
                self.position.0 += 0.0001 * noise;
                self.position.1 += 0.0001 * (rng.unit() - 0.5);
                Value::Gps {
                    lat: self.position.0,
                    lon: self.position.1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_in_physical_ranges() {
        let mut rng = Rng::new(7);
        for kind in [
            SensorKind::Temperature,
            SensorKind::Humidity,
            SensorKind::Vibration,
        ] {
            let mut s = Sensor::new(kind, &mut rng);
            for _ in 0..10_000 {
                match s.read(&mut rng) {
                    Value::Temperature(c) => assert!((-40.0..=85.0).contains(&c)),
                    Value::Humidity(h) => assert!((0.0..=100.0).contains(&h)),
                    Value::Vibration { rms, peak } => assert!(rms >= 0.0 && peak >= rms),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }

    #[test]
    fn poisson_mean_is_about_right() {
        let mut rng = Rng::new(1);
        let n = 20_000;
        let total: u64 = (0..n).map(|_| rng.poisson_ms(60.0).unwrap_or(0)).sum();
        let mean = total as f64 / n as f64;
        assert!((900.0..1100.0).contains(&mean), "{mean}");
        assert_eq!(rng.poisson_ms(0.0), None);
    }
}
