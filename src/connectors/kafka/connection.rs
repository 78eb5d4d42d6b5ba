//! Where and how every Kafka client of a connector connects: the bootstrap
//! servers and the *connection properties* (TLS, SASL, sockets), which reach
//! every client the connector makes — its consumer or producer, and the
//! probes, marker readers, dead-letter producers and admin clients beside
//! them — so that a secured cluster needs its settings given once.
//!
//! Property values can be secrets: [`KafkaConnection`]'s `Debug` and
//! [`KafkaConnection::describe`] show keys and harmless values only.

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bootstrap servers and the connection properties of a Kafka cluster.
///
/// ```
/// use weir::connectors::kafka::KafkaConnection;
/// let cluster = KafkaConnection::new("kafka-1:9093")
///     .property("security.protocol", "SASL_SSL")
///     .property("sasl.mechanism", "SCRAM-SHA-512")
///     .property("sasl.username", "weir")
///     .property("sasl.password", "hunter2");
/// assert!(!format!("{cluster:?}").contains("hunter2"));
/// assert_eq!(cluster.describe(), "kafka-1:9093 (SASL_SSL, SCRAM-SHA-512 as `weir`)");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaConnection {
    bootstrap: String,
    properties: Vec<(String, String)>,
}

impl KafkaConnection {
    /// A cluster reached at `bootstrap` (`host:port,...`), in plain text.
    pub fn new(bootstrap: &str) -> Self {
        KafkaConnection {
            bootstrap: bootstrap.to_string(),
            properties: Vec::new(),
        }
    }

    /// Sets a librdkafka property of every client (a later value of the same
    /// key wins). Meant for [connection properties](is_connection_property);
    /// others are accepted and reach every client too.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.set(key, value);
        self
    }

    /// [`KafkaConnection::property`] in place.
    pub fn set(&mut self, key: &str, value: &str) {
        self.properties.retain(|(k, _)| k != key);
        self.properties.push((key.to_string(), value.to_string()));
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The value of a property, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A client configuration with the bootstrap servers and every property.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }

    /// The servers and how they are reached, for messages: the security
    /// protocol, the SASL mechanism and user name; never a password, key or
    /// token. `kafka-1:9092` alone for a plain-text connection.
    pub fn describe(&self) -> String {
        describe(&self.bootstrap, |key| self.get(key))
    }
}

/// Why [`KafkaConnection::check_access`] failed.
#[derive(Debug)]
pub(crate) enum AccessError {
    /// The broker refused the client (authentication, TLS): what it said.
    Refused(String, KafkaError),
    /// The request failed otherwise (unreachable, timed out).
    Failed(KafkaError),
}

impl AccessError {
    /// The connector error, naming the cluster and how it was reached.
    pub(crate) fn into_error(self, connector: &str, cluster: &KafkaConnection) -> crate::error::WeirError {
        match self {
            AccessError::Refused(reason, e) => crate::error::WeirError::kafka(
                connector,
                format!(
                    "the cluster refused the client: {reason} (bootstrap servers: {}; check the credentials, \
                     `sasl.mechanism` and `ssl.ca.location`)",
                    cluster.describe()
                ),
                e,
            ),
            AccessError::Failed(e) => {
                super::broker_error(connector, "cannot reach the cluster", &cluster.describe(), e)
            }
        }
    }
}

/// How long one metadata request of [`KafkaConnection::check_access`] waits
/// before the client's events are looked at again.
const ACCESS_SLICE: Duration = Duration::from_millis(500);

impl KafkaConnection {
    /// Checks that the cluster lets a client in, before a connector opens
    /// its own clients: a metadata request, retried in short slices for up
    /// to `timeout`, that stops at once when the broker refuses the client
    /// (a wrong password, an untrusted certificate), with what it said —
    /// instead of a request that waits out its whole timeout.
    pub(crate) fn check_access(&self, timeout: Duration) -> std::result::Result<(), AccessError> {
        let consumer: BaseConsumer<RefusalWatch> = self
            .client_config()
            .create_with_context(RefusalWatch::default())
            .map_err(AccessError::Failed)?;
        let deadline = Instant::now() + timeout;
        loop {
            let slice = ACCESS_SLICE.min(deadline.saturating_duration_since(Instant::now()));
            let answer = consumer.fetch_metadata(None, slice);
            // Serves the client's events: the error callback sees refusals.
            let _ = consumer.poll(Duration::ZERO);
            if let Some((reason, code)) = consumer.context().refusal() {
                return Err(AccessError::Refused(reason, KafkaError::Global(code)));
            }
            match answer {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(AccessError::Failed(e)),
                Err(_) => {}
            }
        }
    }
}

/// Keeps the first refusal (authentication or TLS failure) librdkafka reports.
#[derive(Default)]
struct RefusalWatch {
    refusal: Mutex<Option<(String, RDKafkaErrorCode)>>,
}

impl RefusalWatch {
    fn refusal(&self) -> Option<(String, RDKafkaErrorCode)> {
        self.refusal.lock().ok().and_then(|r| r.clone())
    }
}

impl ClientContext for RefusalWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if let Some(
            code @ (RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::SSL),
        ) = code
        {
            if let Ok(mut refusal) = self.refusal.lock() {
                refusal.get_or_insert_with(|| (reason.to_string(), code));
            }
        } else {
            tracing::debug!("librdkafka (access check): {error}: {reason}");
        }
    }

    // Refusals are reported through `error`; the log would repeat them.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!("librdkafka (access check) {level:?} {fac}: {log_message}");
    }
}

impl ConsumerContext for RefusalWatch {}

/// [`KafkaConnection::describe`] of a client configuration.
pub(crate) fn reached_at(config: &ClientConfig) -> String {
    describe(config.get("bootstrap.servers").unwrap_or(""), |key| config.get(key))
}

fn describe<'a>(bootstrap: &str, get: impl Fn(&str) -> Option<&'a str>) -> String {
    let protocol = get("security.protocol").unwrap_or("PLAINTEXT");
    if protocol.eq_ignore_ascii_case("plaintext") {
        return bootstrap.to_string();
    }
    let mut how = protocol.to_uppercase();
    if how.starts_with("SASL") {
        how.push_str(", ");
        how.push_str(get("sasl.mechanism").or(get("sasl.mechanisms")).unwrap_or("GSSAPI"));
        if let Some(user) = get("sasl.username") {
            how.push_str(&format!(" as `{user}`"));
        }
    }
    format!("{bootstrap} ({how})")
}

impl std::fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConnection")
            .field("bootstrap", &self.bootstrap)
            .field("properties", &shown)
            .finish()
    }
}

impl From<&str> for KafkaConnection {
    fn from(bootstrap: &str) -> Self {
        KafkaConnection::new(bootstrap)
    }
}

impl From<&String> for KafkaConnection {
    fn from(bootstrap: &String) -> Self {
        KafkaConnection::new(bootstrap)
    }
}

impl From<String> for KafkaConnection {
    fn from(bootstrap: String) -> Self {
        KafkaConnection::new(&bootstrap)
    }
}

impl From<&KafkaConnection> for KafkaConnection {
    fn from(connection: &KafkaConnection) -> Self {
        connection.clone()
    }
}

/// Whether a librdkafka property says how to reach the cluster (TLS, SASL,
/// sockets, address resolution) rather than how one client behaves: such a
/// property given to a source or sink reaches every client it makes.
pub fn is_connection_property(key: &str) -> bool {
    key == "security.protocol"
        || key.starts_with("sasl.")
        || key.starts_with("ssl.")
        || key.starts_with("ssl_")
        || key == "enable.ssl.certificate.verification"
        || key.starts_with("socket.")
        || key == "client.dns.lookup"
        || key == "broker.address.family"
        || key == "client.id"
}

/// Whether a property's value must never be shown (passwords, keys, tokens).
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.contains("token")
        || key == "sasl.oauthbearer.config"
        || key == "sasl.jaas.config"
        || key == "ssl.key.pem"
        || key == "ssl_key"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_properties_are_told_from_client_ones() {
        for key in [
            "security.protocol",
            "sasl.mechanism",
            "ssl.ca.location",
            "socket.timeout.ms",
            "client.id",
        ] {
            assert!(is_connection_property(key), "{key}");
        }
        for key in ["linger.ms", "queued.max.messages.kbytes", "acks", "isolation.level"] {
            assert!(!is_connection_property(key), "{key}");
        }
    }

    #[test]
    fn secrets_are_never_shown() {
        let c = KafkaConnection::new("b:9093")
            .property("security.protocol", "ssl")
            .property("ssl.key.password", "k3y")
            .property("sasl.password", "pw")
            .property("sasl.oauthbearer.client.secret", "s3cret")
            .property("ssl.key.pem", "-----BEGIN PRIVATE KEY-----");
        let shown = format!("{c:?} {}", c.describe());
        for secret in ["k3y", "pw\"", "s3cret", "BEGIN PRIVATE"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(c.describe(), "b:9093 (SSL)");
        assert_eq!(c.client_config().get("sasl.password"), Some("pw"));
    }

    #[test]
    fn a_later_value_of_a_key_wins() {
        let c = KafkaConnection::new("b:1")
            .property("client.id", "a")
            .property("client.id", "b");
        assert_eq!(c.get("client.id"), Some("b"));
        assert_eq!(KafkaConnection::new("b:1").describe(), "b:1");
    }
}
