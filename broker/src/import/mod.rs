//! Configuration importers from other brokers.
//!
//! Invariant: an importer never writes files; it returns the translated
//! TOML and the list of options it could not translate, and the caller
//! decides where they go (stdout and stderr for the CLI).

pub mod mosquitto;
