//! The connection task over an in-memory pipe: what a client that stops
//! reading sees on the wire.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{serve, ConnectionInfo};
use crate::broker::Broker;
use crate::config::Config;
use crate::protocol::{
    self, reason, Connect, ConnectProperties, Packet, ProtocolVersion, QoS, Subscribe,
    SubscribeFilter,
};
use crate::router::Message;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn broker(config: Config) -> Arc<Broker> {
    Broker::new(
        Arc::new(config),
        Arc::new(crate::hooks::MemoryOnly),
        Arc::new(crate::hooks::ListenerPolicy),
    )
}

async fn send(client: &mut DuplexStream, packet: Packet) {
    let mut buf = BytesMut::new();
    protocol::encode(&packet, V5, &mut buf).unwrap();
    client.write_all(&buf).await.unwrap();
}

async fn recv(client: &mut DuplexStream, buf: &mut BytesMut) -> Option<Packet> {
    match crate::framed::read_packet(client, buf, V5, 1 << 24).await {
        Ok(p) => Some(p),
        Err(crate::framed::FramedError::Closed) => None,
        Err(e) => panic!("reading a packet: {e}"),
    }
}

/// Starts a connection task on a pipe of `pipe` bytes, connects a v5 client
/// with keep alive 0 and subscribes it to `t`.
async fn subscribed_client(
    broker: &Arc<Broker>,
    pipe: usize,
) -> (DuplexStream, BytesMut, tokio::task::JoinHandle<()>) {
    let (server, mut client) = tokio::io::duplex(pipe);
    let info = ConnectionInfo {
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        anonymous_allowed: true,
        certificate_user: super::CertificateUser::NotUsed,
        pending: None,
    };
    let task = tokio::spawn(serve(server, info, broker.clone(), false));
    let connect = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 0,
        client_id: "stalled".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    };
    send(&mut client, Packet::Connect(Box::new(connect))).await;
    let mut buf = BytesMut::new();
    assert!(
        matches!(recv(&mut client, &mut buf).await, Some(Packet::ConnAck(a)) if a.reason_code == 0)
    );
    send(
        &mut client,
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter::new("t", QoS::AtMostOnce)],
            ..Subscribe::default()
        }),
    )
    .await;
    assert!(matches!(
        recv(&mut client, &mut buf).await,
        Some(Packet::SubAck(_))
    ));
    (client, buf, task)
}

fn big_message(len: usize) -> Arc<Message> {
    Arc::new(Message::new(
        "t".into(),
        Bytes::from(vec![7u8; len]),
        QoS::AtMostOnce,
        false,
        Default::default(),
        None,
    ))
}

#[tokio::test]
async fn a_write_cut_short_by_shutdown_is_not_resent_from_its_start() {
    let broker = broker(Config::default());
    let (mut client, mut buf, task) = subscribed_client(&broker, 1024).await;
    broker.publish(big_message(20_000));
    // A few bytes of the PUBLISH arrived: the write is under way and, with
    // a 1 KiB pipe, far from done.
    let mut head = [0u8; 8];
    client.read_exact(&mut head).await.unwrap();
    buf.extend_from_slice(&head);
    broker.begin_shutdown();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    buf.extend_from_slice(&rest);
    match recv(&mut client, &mut buf).await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "t");
            assert!(p.payload.len() == 20_000 && p.payload.iter().all(|&b| b == 7));
        }
        other => panic!("expected the PUBLISH, got {other:?}"),
    }
    match recv(&mut client, &mut buf).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, reason::SERVER_SHUTTING_DOWN),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    assert!(buf.is_empty(), "trailing bytes: {buf:?}");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let mut config = Config::default();
    config.limits.write_timeout_ms = 200;
    let broker = broker(config);
    let (client, _buf, task) = subscribed_client(&broker, 1024).await;
    // Keep alive 0 and a client that never reads: only the write timeout
    // can end this connection.
    broker.publish(big_message(20_000));
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the stalled connection was never closed")
        .unwrap();
    let m = &broker.metrics;
    assert_eq!(m.disconnects_write_timeout.load(Ordering::Relaxed), 1);
    assert_eq!(m.clients_connected.load(Ordering::Relaxed), 0);
    drop(client);
}
