//! The control plane over TLS: a lease manager serving TLS, clients that
//! trust its CA through `RFX_TLS_CA`, and the failures an operator would
//! meet (a plain client, an untrusted certificate) as clear errors.
//!
//! One test: `RFX_TLS_CA` is process-wide.

#![allow(clippy::unwrap_used)]

mod util;

use rfx_leases::client::AdminClient;
use rfx_leases::tls::{TlsServer, TLS_CA_ENV};
use rfx_leases::DaemonError;
use util::pki::pki;
use util::{within, Env, TestDaemon, KEY};

#[test]
fn control_plane_over_tls() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "good");
    let (other_ca, _, _) = pki(dir.path(), "other");
    let mut cfg = env.config();
    cfg.tls = Some(TlsServer::from_pem_files(&cert, &key).unwrap());
    let d = TestDaemon::start(cfg);

    // Trusting the CA: the whole protocol works as over plain TCP.
    std::env::set_var(TLS_CA_ENV, &ca);
    env.block_on(async {
        let admin = within("connect", AdminClient::connect(d.addr, KEY))
            .await
            .unwrap();
        let token = within("add", admin.add_tenant("tls-tenant")).await.unwrap();
        assert!(token.starts_with("tls-tenant."));
    });

    // A certificate from another CA: refused by the client, clearly.
    std::env::set_var(TLS_CA_ENV, &other_ca);
    env.block_on(async {
        let err = within("connect", AdminClient::connect(d.addr, KEY))
            .await
            .unwrap_err();
        assert!(matches!(err, DaemonError::Tls(_)), "{err}");
        assert!(err.to_string().contains("TLS handshake"), "{err}");
    });

    // A plain client against a TLS lease manager: an error, not a hang.
    std::env::remove_var(TLS_CA_ENV);
    env.block_on(async {
        let r = within("connect", AdminClient::connect(d.addr, KEY)).await;
        assert!(r.is_err(), "a plain client got through: {r:?}");
    });

    // Bad files are configuration errors, before any connection.
    assert!(matches!(
        TlsServer::from_pem_files(&ca, &dir.path().join("missing.pem")),
        Err(DaemonError::Tls(_))
    ));
}
