//! The harness itself: brokers bind port 0 and report the port they got
//! (no race for a free port), a restart keeps that port, and the Mosquitto
//! fixture reports why it could not start on a taken port.

use std::net::TcpListener;
use std::time::Duration;

use edgemq_tests::{mosquitto_pub, started_listeners, Broker, Mosquitto, Sub};

#[test]
fn a_broker_binds_port_0_and_the_harness_reads_the_port_it_got() {
    let mut broker = Broker::start();
    assert_ne!(broker.port, 0);
    assert_eq!(started_listeners(&broker.log()), vec![broker.addr()]);
    let mut sub = Sub::spawn(broker.port, &["-t", "harness/t", "-q", "1"]);
    sub.wait_subscribed();
    let out = mosquitto_pub(broker.port, &["-t", "harness/t", "-q", "1", "-m", "hello"]);
    assert!(out.status.success());
    assert_eq!(
        sub.messages(1, Duration::from_secs(10)),
        vec!["harness/t hello".to_string()]
    );
    // A restart asks for the same port: clients and bridges keep their address.
    let port = broker.port;
    broker.restart();
    assert_eq!(broker.port, port);
    assert_eq!(started_listeners(&broker.log()), vec![broker.addr()]);
}

#[test]
fn a_broker_with_its_own_listeners_reports_each_and_the_harness_takes_its_own() {
    let broker = Broker::start_with(Some(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nprotocol = \"ws\"\n",
    ));
    let listeners = started_listeners(&broker.log());
    assert_eq!(listeners.len(), 2, "{listeners:?}");
    assert_ne!(listeners[0].port(), 0);
    assert_eq!(listeners[1], broker.addr());
}

#[test]
fn mosquitto_on_a_taken_port_reports_its_log_and_start_finds_another() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let log = match Mosquitto::try_start_on(port, "") {
        Ok(_) => panic!("mosquitto started on a port that is in use"),
        Err(log) => log,
    };
    assert!(log.to_lowercase().contains("in use"), "log: {log}");
    let m = Mosquitto::start("");
    assert_ne!(m.port, port);
    assert!(mosquitto_pub(m.port, &["-t", "x", "-m", "y"])
        .status
        .success());
}
