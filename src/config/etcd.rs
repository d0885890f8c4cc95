//! How to reach etcd: endpoints, TLS files and credentials, shared by the
//! agent and `list`.
//!
//! Secrets (the password, the private key) are read here and never printed:
//! errors name the flag, the variable and at most the file's path.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;

use super::address::parse_endpoints;
use super::{error, ConfigError};

/// How to reach etcd and where the records are: shared by the agent and `list`.
#[derive(Debug, Args)]
pub(super) struct EtcdArgs {
    /// Comma-separated etcd endpoints of one cluster; `host:port` means `http://host:port`.
    // `hide_env_values`: `--help` would otherwise print a password someone
    // typed into the endpoint.
    #[arg(
        long,
        global = true,
        env = "ETCD_ENDPOINT",
        value_name = "LIST",
        default_value = "http://127.0.0.1:2379",
        hide_env_values = true
    )]
    pub(super) etcd_endpoints: String,

    /// Root of all keys.
    #[arg(
        long,
        global = true,
        env = "REGISTER_PREFIX",
        value_name = "PATH",
        default_value = "/registered"
    )]
    pub(super) prefix: String,

    /// CA certificate (PEM) that signed etcd's server certificates; enables TLS.
    #[arg(long, global = true, env = "ETCD_CACERT", value_name = "FILE")]
    etcd_cacert: Option<PathBuf>,

    /// Client certificate (PEM) for etcd's client-certificate authentication.
    #[arg(long, global = true, env = "ETCD_CERT", value_name = "FILE")]
    etcd_cert: Option<PathBuf>,

    /// Private key (PEM) of --etcd-cert.
    #[arg(long, global = true, env = "ETCD_KEY", value_name = "FILE")]
    etcd_key: Option<PathBuf>,

    /// etcd user name (etcd's own authentication).
    #[arg(long, global = true, env = "ETCD_USER", value_name = "NAME")]
    etcd_user: Option<String>,

    /// Password of --etcd-user (prefer --etcd-password-file: the environment and
    /// the command line are visible to other processes of the same user).
    // `allow_hyphen_values`: a password starting with `-` is a value, not an
    // unknown flag that clap would echo.
    #[arg(
        long,
        global = true,
        env = "ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    etcd_password: Option<String>,

    /// File holding the password of --etcd-user (first line).
    #[arg(long, global = true, env = "ETCD_PASSWORD_FILE", value_name = "FILE")]
    etcd_password_file: Option<PathBuf>,
}

/// An etcd cluster and how to talk to it.
#[derive(Debug, Clone)]
pub struct EtcdTarget {
    /// Normalised `http(s)://host:port`, never with user info: safe to log.
    pub endpoints: Vec<String>,
    /// TLS material and credentials; its `Debug` shows no secret.
    pub security: EtcdSecurity,
}

/// How the agent authenticates to etcd and checks etcd's identity.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdSecurity {
    /// PEM of the CA that signed etcd's server certificates: TLS is on.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key for client-certificate authentication.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// etcd's own authentication, when a user is configured.
    pub credentials: Option<Credentials>,
}

/// An etcd user and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Not secret: start-up logs it.
    pub user: String,
    /// Secret: never logged, never in an error.
    pub password: String,
}

/// Never shows the password, whatever prints it.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Shows whether TLS is on, never the key.
impl fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("tls", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_identity.is_some())
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl EtcdArgs {
    pub(super) fn target(&self) -> Result<EtcdTarget, ConfigError> {
        let security = self.etcd_security()?;
        let tls = security.ca_pem.is_some();
        let endpoints = parse_endpoints(&self.etcd_endpoints, tls)
            .map_err(|p| error("--etcd-endpoints", "ETCD_ENDPOINT", p))?;
        Ok(EtcdTarget {
            endpoints,
            security,
        })
    }

    fn etcd_security(&self) -> Result<EtcdSecurity, ConfigError> {
        let ca_pem = self
            .etcd_cacert
            .as_deref()
            .map(|path| {
                read_pem(path, Pem::Certificate)
                    .map_err(|p| error("--etcd-cacert", "ETCD_CACERT", p))
            })
            .transpose()?;
        let client_identity = match (&self.etcd_cert, &self.etcd_key) {
            (Some(cert), Some(key)) => {
                let cert = read_pem(cert, Pem::Certificate)
                    .map_err(|p| error("--etcd-cert", "ETCD_CERT", p))?;
                let key = read_pem(key, Pem::PrivateKey)
                    .map_err(|p| error("--etcd-key", "ETCD_KEY", p))?;
                Some((cert, key))
            }
            (Some(_), None) => {
                return Err(error("--etcd-key", "ETCD_KEY", "required with --etcd-cert"))
            }
            (None, Some(_)) => {
                return Err(error(
                    "--etcd-cert",
                    "ETCD_CERT",
                    "required with --etcd-key",
                ))
            }
            (None, None) => None,
        };
        if client_identity.is_some() && ca_pem.is_none() {
            return Err(error(
                "--etcd-cacert",
                "ETCD_CACERT",
                "required with a client certificate (TLS needs the CA that signed etcd's certificate)",
            ));
        }
        Ok(EtcdSecurity {
            ca_pem,
            client_identity,
            credentials: self.credentials()?,
        })
    }

    fn credentials(&self) -> Result<Option<Credentials>, ConfigError> {
        let password =
            match (&self.etcd_password, &self.etcd_password_file) {
                (Some(_), Some(_)) => return Err(error(
                    "--etcd-password-file",
                    "ETCD_PASSWORD_FILE",
                    "give either a password file or --etcd-password (env ETCD_PASSWORD), not both",
                )),
                (None, Some(path)) => Some(
                    read_password_file(path)
                        .map_err(|p| error("--etcd-password-file", "ETCD_PASSWORD_FILE", p))?,
                ),
                (Some(password), None) => Some(password.clone()),
                (None, None) => None,
            };
        // etcd refuses every empty password: better said now than retried forever.
        if password.as_deref() == Some("") {
            return Err(match self.etcd_password_file {
                Some(_) => error(
                    "--etcd-password-file",
                    "ETCD_PASSWORD_FILE",
                    "the first line of the file is empty",
                ),
                None => error("--etcd-password", "ETCD_PASSWORD", "is empty"),
            });
        }
        let user = self
            .etcd_user
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        match (user, password) {
            (Some(user), Some(password)) => Ok(Some(Credentials {
                user: user.to_owned(),
                password,
            })),
            (Some(_), None) => Err(error(
                "--etcd-password-file",
                "ETCD_PASSWORD_FILE",
                "--etcd-user needs a password (--etcd-password-file or --etcd-password)",
            )),
            (None, Some(_)) => Err(error(
                "--etcd-user",
                "ETCD_USER",
                "a password was given without a user",
            )),
            (None, None) => Ok(None),
        }
    }
}

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificate,
    PrivateKey,
}

/// Reads a PEM file and checks that it holds what it should, so that a
/// swapped or truncated file is a configuration error at start instead of
/// a TLS failure retried forever. The contents are never echoed.
fn read_pem(path: &Path, expected: Pem) -> Result<Vec<u8>, String> {
    let pem = read_file(path)?;
    let text = String::from_utf8_lossy(&pem);
    let found = match expected {
        Pem::Certificate => text.contains("-----BEGIN CERTIFICATE-----"),
        Pem::PrivateKey => text
            .lines()
            .any(|l| l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----")),
    };
    if !found {
        let what = match expected {
            Pem::Certificate => "certificate",
            Pem::PrivateKey => "private key",
        };
        return Err(format!("{} holds no PEM {what}", path.display()));
    }
    Ok(pem)
}

/// The password: the first line of the file, without its line end.
fn read_password_file(path: &Path) -> Result<String, String> {
    let text = String::from_utf8(read_file(path)?)
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
