//! `edgemq import-mosquitto` (issue 16) on real mosquitto.conf files: the
//! example the Debian mosquitto package ships, and a site config with a
//! password file, an ACL file, a TLS listener and a bridge; the output
//! passes `check-config` and the broker runs it (real clients log in with
//! the translated password file, anonymous ones are refused as Mosquitto 2
//! would).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use edgemq_tests::{edgemq_command, free_port, make_pki, mosquitto_pub, require_tool, run, Broker};

fn import(conf: &Path) -> Output {
    let out = run(
        edgemq_command().arg("import-mosquitto").arg(conf),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn check_config(file: &Path) -> Output {
    run(
        edgemq_command().arg("check-config").arg(file),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// The example mosquitto.conf of the Debian package (gzip or not).
fn debian_example(dir: &Path) -> PathBuf {
    let plain = Path::new("/usr/share/doc/mosquitto/examples/mosquitto.conf");
    if plain.exists() {
        return plain.to_path_buf();
    }
    let gz = plain.with_extension("conf.gz");
    assert!(
        gz.exists(),
        "the mosquitto package's example config is missing: run scripts/install-deps.sh"
    );
    let out = run(
        Command::new("gzip").arg("-dc").arg(&gz),
        Duration::from_secs(10),
    )
    .unwrap();
    let target = dir.join("mosquitto.conf");
    std::fs::write(&target, out.stdout).unwrap();
    target
}

#[test]
fn the_debian_example_config_translates_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let example = debian_example(dir.path());
    let out = import(&example);
    let toml = dir.path().join("edgemq.toml");
    std::fs::write(&toml, &out.stdout).unwrap();
    let checked = check_config(&toml);
    assert!(
        checked.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&checked.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    // Everything in it is commented out: nothing is left untranslated.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_site_config_translates_checks_and_runs() {
    require_tool("mosquitto_passwd");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let pw = d.join("passwd");
    let made = run(
        Command::new("mosquitto_passwd").args([
            "-c",
            "-b",
            pw.to_str().unwrap(),
            "alice",
            "secret",
        ]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(made.status.success());
    std::fs::write(d.join("acl"), "user alice\ntopic readwrite site/#\n").unwrap();
    let (plain, tls) = (free_port(), free_port());
    let conf = d.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "# a site's broker\nper_listener_settings false\nallow_anonymous false\n\
             password_file {d}/passwd\nacl_file {d}/acl\npersistence true\n\
             persistence_location {d}/data/\nlog_dest syslog\nmax_queued_messages 5000\n\
             max_inflight_messages 20\nmax_keepalive 120\nmax_packet_size 262144\n\
             persistent_client_expiration 14d\n\n\
             listener {plain} 127.0.0.1\n\n\
             listener {tls} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\n\
             connection cloud\naddress 127.0.0.1:{cloud}\nremote_clientid gw-0001\n\
             cleansession false\ntopic site/# out 1 \"\" gw-0001/\ntopic cmd/# in 1 \"\" gw-0001/\n\
             topic x/# both 0 local/ remote/\n",
            d = d.display(),
            cloud = free_port(),
        ),
    )
    .unwrap();
    let out = import(&conf);
    let toml = String::from_utf8(out.stdout).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Every untranslated option, with its line and a reason.
    for expected in [
        "mosquitto.conf:2: not translated: per_listener_settings",
        "mosquitto.conf:8: not translated: log_dest",
        "mosquitto.conf:24: not translated: cleansession",
        "mosquitto.conf:27: not translated: topic: a local prefix",
    ] {
        assert!(err.contains(expected), "{expected} missing from:\n{err}");
    }
    assert_eq!(err.lines().count(), 4, "{err}");
    for expected in [
        "max_queued_messages = 5000",
        "max_inflight = 20",
        "max_session_expiry = 1209600",
        "protocol = \"mqtts\"",
        "remote_prefix = \"gw-0001/\"",
        "filter = \"gw-0001/cmd/#\"",
    ] {
        assert!(toml.contains(expected), "{expected} missing from:\n{toml}");
    }
    let file = d.join("edgemq.toml");
    std::fs::write(&file, &toml).unwrap();
    let checked = check_config(&file);
    assert!(
        checked.status.success(),
        "{}\n{toml}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // It runs: alice logs in on both listeners, anonymous clients are refused.
    let broker = Broker::start_with(Some(&toml));
    let creds = [
        "-u", "alice", "-P", "secret", "-t", "site/a", "-m", "1", "-q", "1",
    ];
    assert!(
        mosquitto_pub(plain, &creds).status.success(),
        "{}",
        broker.log()
    );
    let ca = format!("{}/ca.pem", d.display());
    let over_tls: Vec<&str> = creds.iter().copied().chain(["--cafile", &ca]).collect();
    assert!(
        mosquitto_pub(tls, &over_tls).status.success(),
        "{}",
        broker.log()
    );
    assert!(!mosquitto_pub(plain, &["-t", "site/a", "-m", "1"])
        .status
        .success());
}
