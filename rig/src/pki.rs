//! Certificates for an etcd that requires TLS client certificates
//! (`Etcd::start_tls`) and for the agent's `--etcd-cacert`/`--etcd-cert`.

use std::path::PathBuf;

use crate::unique_id;

/// Certificates made for one test in a temporary directory: a CA, a server
/// certificate for `127.0.0.1` (IP SAN) and a client certificate, both signed
/// by the CA; every file PEM.
pub struct TestPki {
    /// Holds every PEM file; removed on drop.
    dir: tempfile::TempDir,
}

impl TestPki {
    pub fn generate() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().expect("pki temp dir");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write pem");
        };
        let serial = unique_id("ca");

        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, format!("test CA {serial}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        write("ca.pem", ca.self_signed(&ca_key).expect("CA cert").pem());
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |name: &str, sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = usages;
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &issuer).expect("leaf cert");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        };
        // etcd's gRPC gateway also dials etcd with the server certificate.
        leaf(
            "server",
            vec!["127.0.0.1".to_string(), "localhost".to_string()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        leaf(
            "client",
            Vec::new(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        TestPki { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.file("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.file("server-key.pem")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.file("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.file("client-key.pem")
    }
}
