//! Shared harness for edgemq's end-to-end tests: start the real binaries on
//! loopback, wait for them, and clean up.
