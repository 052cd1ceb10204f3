//! The NATS connection options shared by `parti worker` and `parti status`, passed through to
//! async-nats' `ConnectOptions`.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::ConnectOptions;

/// How to reach the NATS servers.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct NatsArgs {
    /// NATS server URL, or several separated by commas.
    #[arg(
        long = "nats",
        env = "PARTI_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub(crate) url: String,
    /// The cluster's namespace: its buckets are `{ns}-ids`, `{ns}-heartbeats`, `{ns}-leader`
    /// and `{ns}-assignments`. Default: the configuration's (`PARTI_NAMESPACE`, the file),
    /// else `parti`.
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// User name (with --password).
    #[arg(long, env = "PARTI_NATS_USER", requires = "password")]
    pub(crate) user: Option<String>,
    /// Password (with --user).
    #[arg(
        long,
        env = "PARTI_NATS_PASSWORD",
        requires = "user",
        hide_env_values = true
    )]
    pub(crate) password: Option<String>,
    /// Authentication token.
    #[arg(
        long,
        env = "PARTI_NATS_TOKEN",
        conflicts_with = "user",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
    /// NATS credentials file (JWT and NKey seed).
    #[arg(long, env = "PARTI_NATS_CREDS")]
    pub(crate) creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the server with; implies TLS.
    #[arg(long)]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), with --tls-key; implies TLS.
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Client private key (PEM), with --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Refuse to connect without TLS.
    #[arg(long)]
    pub(crate) tls_required: bool,
}

impl NatsArgs {
    /// `--namespace`, else `PARTI_NAMESPACE`, else `parti` (for commands without a
    /// configuration file).
    pub(crate) fn namespace(&self) -> String {
        self.namespace
            .clone()
            .or_else(|| std::env::var("PARTI_NAMESPACE").ok())
            .unwrap_or_else(|| "parti".to_owned())
    }

    /// The URLs of `--nats`, trimmed, empty ones dropped.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// async-nats options with the credentials and TLS settings given, and a quick reconnect
    /// (pauses of 100 ms per failed attempt, at most 1 s).
    ///
    /// # Errors
    ///
    /// An unreadable credentials file.
    pub(crate) async fn options(&self, name: &str) -> Result<ConnectOptions, String> {
        let mut options = match &self.creds {
            Some(path) => ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| format!("cannot read the credentials file {}: {e}", path.display()))?,
            None => ConnectOptions::new(),
        };
        options = options.name(name).reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(100).min(1000))
        });
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls_required || self.tls_ca.is_some() || self.tls_cert.is_some() {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}
