//! edgemq-pub/sub over TLS (rustls with ring) against a real Mosquitto TLS
//! listener that requires client certificates; certificates are made by the
//! real openssl command line tool for each run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_support;

use std::path::Path;
use std::process::Command;

use client_support::{binary, free_port, Mosquitto};
use edgemq_tests::openssl;

/// A CA, a server certificate for localhost and a client certificate.
fn make_pki(dir: &Path) {
    edgemq_tests::require_tool("openssl");
    let key = [
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
    ];
    for name in ["ca.key", "server.key", "client.key", "other-ca.key"] {
        let mut args = key.to_vec();
        args.push(name);
        openssl(dir, &args);
    }
    for (ca, subject) in [
        ("ca", "/CN=edgemq test CA"),
        ("other-ca", "/CN=someone else"),
    ] {
        let (k, c) = (format!("{ca}.key"), format!("{ca}.pem"));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &k,
                "-out",
                &c,
                "-days",
                "2",
                "-subj",
                subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for (name, cn) in [("server", "/CN=localhost"), ("client", "/CN=device-1")] {
        let (k, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        openssl(dir, &["req", "-new", "-key", &k, "-out", &csr, "-subj", cn]);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
    // Mosquitto started as root reads its key after dropping to its own user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[test]
fn publish_and_subscribe_over_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let d = dir.path().display().to_string();
    let extra = format!(
        "allow_anonymous true\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\n"
    );
    let broker = Mosquitto::start_with(free_port(), &extra, tempfile::tempdir().unwrap());
    let p = broker.port.to_string();
    let tls = |cmd: &mut Command, ca: &str| {
        cmd.args([
            "-h",
            "localhost",
            "-p",
            &p,
            "--cafile",
            &format!("{d}/{ca}"),
        ])
        .args([
            "--cert",
            &format!("{d}/client.pem"),
            "--key",
            &format!("{d}/client.key"),
        ]);
    };

    let mut publish = Command::new(binary("edgemq-client", "edgemq-pub"));
    tls(&mut publish, "ca.pem");
    let out = publish
        .args([
            "-t", "tls/x", "-m", "secure", "-r", "-q", "1", "-V", "mqttv5",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut subscribe = Command::new(binary("edgemq-client", "edgemq-sub"));
    tls(&mut subscribe, "ca.pem");
    let out = subscribe
        .args(["-t", "tls/x", "-C", "1", "-W", "10"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "secure\n");

    // The other side of the interop: mosquitto_sub with the same PKI.
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "localhost",
            "-p",
            &p,
            "--cafile",
            &format!("{d}/ca.pem"),
        ])
        .args([
            "--cert",
            &format!("{d}/client.pem"),
            "--key",
            &format!("{d}/client.key"),
        ])
        .args(["-t", "tls/x", "-C", "1", "-W", "10"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "secure\n");

    // A broker certificate from an unknown CA is a TLS failure (exit 6).
    let mut wrong = Command::new(binary("edgemq-client", "edgemq-pub"));
    tls(&mut wrong, "other-ca.pem");
    let out = wrong.args(["-t", "tls/x", "-m", "no"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An unreadable CA file is reported before connecting (exit 6, file named).
    let mut missing = Command::new(binary("edgemq-client", "edgemq-pub"));
    tls(&mut missing, "nope.pem");
    let out = missing.args(["-t", "tls/x", "-m", "no"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.pem"));
}
