//! wg-quick configuration files: the INI format read by `wg-quick` and (minus the wg-quick-only
//! keys) by `wg setconf`.
//!
//! ```text
//! [Interface]
//! PrivateKey = <base64>
//! ListenPort = 51820
//! Address = 10.0.0.1/24, fd00::1/64
//!
//! [Peer]
//! PublicKey = <base64>
//! AllowedIPs = 10.0.0.2/32
//! Endpoint = peer.example:51820
//! ```
//!
//! The rules follow wg-quick and wg: section names and keys are case-insensitive, `#` starts a
//! comment anywhere on a line, whitespace around keys and values is ignored, list values
//! accumulate over repeated lines, and a later scalar value replaces an earlier one. Everything
//! else — unknown keys or sections, a key outside any section, a second `[Interface]`, a peer
//! without `PublicKey`, two peers with one public key, malformed values — is an error that names
//! the file and the 1-based line. Secret key text is never echoed in an error.
//!
//! Deliberate choices where wg and wg-quick leave room:
//! - `FwMark = off` and `PersistentKeepalive = off` parse as `Some(0)`, which is what `wg`
//!   sends over the UAPI for `off`; `None` means the key was absent. A caller that treats the
//!   fwmark as "set" must therefore test for a non-zero value.
//! - A decimal `FwMark` with a leading zero is refused: `wg` reads it as octal, which is rarely
//!   what the author meant.
//! - `Table = off` / `auto` are stored in lower case whatever their spelling (wg-quick compares
//!   them case-insensitively); any other table is kept as written.
//! - `Address` and `DNS` are split on commas and whitespace (as wg-quick does), `AllowedIPs` on
//!   commas only (as `wg` does); empty items (`a,,b`, a trailing comma, an empty value) are
//!   skipped.
//! - `AllowedIPs` entries with host bits set are masked to their network (`10.0.0.1/24` becomes
//!   `10.0.0.0/24`), as the kernel and the UAPI report them back; `Address` entries keep theirs.
//! - `Endpoint` must be `host:port` or `[host]:port` with a numeric port 1-65535; an unbracketed
//!   IPv6 address is refused as ambiguous. Resolution is the caller's job (see
//!   [`Config::to_uapi_set`]).
//!
//! Key material lives in [`Key32`], which zeroes itself on drop and does not print in `Debug`.
//! Strings built from keys ([`Key32::to_base64`], [`Key32::to_hex`], [`Config::to_uapi_set`],
//! [`Config::to_text`]) are the caller's to wipe (e.g. with `zeroize::Zeroizing`).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ipnet::IpNet;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A 32-byte WireGuard key (private, public or preshared). Zeroed on drop; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Hash, Zeroize, ZeroizeOnDrop)]
pub struct Key32([u8; 32]);

impl Key32 {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key32(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Decodes the form `wg` uses: exactly 44 characters of standard, padded base64 that decode
    /// to exactly 32 bytes. Anything else is `None`.
    pub fn from_base64(text: &str) -> Option<Self> {
        if text.len() != 44 {
            return None;
        }
        // Larger than any 44-character input can decode to, so decode_slice never runs short.
        let mut buf = Zeroizing::new([0u8; 48]);
        match STANDARD.decode_slice(text.as_bytes(), &mut buf[..]) {
            Ok(32) => {
                let mut key = Key32([0; 32]);
                key.0.copy_from_slice(&buf[..32]);
                Some(key)
            }
            _ => None,
        }
    }

    /// The standard, padded base64 form (44 characters).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Lower-case hex (64 characters), as the UAPI wants it.
    pub fn to_hex(&self) -> String {
        crate::noise::keys::hex(&self.0)
    }
}

impl From<[u8; 32]> for Key32 {
    fn from(bytes: [u8; 32]) -> Self {
        Key32(bytes)
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32(<redacted>)")
    }
}

/// A parsed configuration file: one `[Interface]` and any number of `[Peer]`s, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub interface: InterfaceSection,
    pub peers: Vec<PeerSection>,
}

/// The `[Interface]` section. `None` / empty means the key was absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceSection {
    pub private_key: Option<Key32>,
    pub listen_port: Option<u16>,
    /// `Some(0)` is `FwMark = off`.
    pub fwmark: Option<u32>,
    /// Host bits kept: `10.0.0.1/24` stays so; a bare address is /32 or /128.
    pub addresses: Vec<IpNet>,
    /// Name servers and search domains, as written.
    pub dns: Vec<String>,
    pub mtu: Option<u32>,
    /// `off`, `auto` (both lower-cased), or a table number or name as written.
    pub table: Option<String>,
    pub pre_up: Vec<String>,
    pub post_up: Vec<String>,
    pub pre_down: Vec<String>,
    pub post_down: Vec<String>,
    pub save_config: bool,
}

/// A `[Peer]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerSection {
    pub public_key: Key32,
    pub preshared_key: Option<Key32>,
    /// Networks masked to their prefix; a bare address is a host route.
    pub allowed_ips: Vec<IpNet>,
    /// `host:port` or `[v6]:port`, kept as text; resolution is the caller's job.
    pub endpoint: Option<String>,
    /// `Some(0)` is `PersistentKeepalive = off`.
    pub persistent_keepalive: Option<u16>,
}

impl fmt::Debug for PeerSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A public key is not secret and is what identifies the peer, so show it.
        f.debug_struct("PeerSection")
            .field("public_key", &format_args!("{}", self.public_key.to_base64()))
            .field("preshared_key", &self.preshared_key)
            .field("allowed_ips", &self.allowed_ips)
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .finish()
    }
}

/// What went wrong, and where. `Display` gives `FILE:LINE: message`, or `FILE: message` when
/// no single line is at fault (an empty `file` is left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "{}:{}: {}", self.file, line, self.message),
            (false, None) => write!(f, "{}: {}", self.file, self.message),
            (true, Some(line)) => write!(f, "line {}: {}", line, self.message),
            (true, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses the text of a configuration file; `file` is only used to name it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    Parser::new(file).run(text)
}

/// The number of the first line of `text` that sets `key` (any case) to `value`, as the parser
/// reads lines; for errors found after parsing, such as an endpoint that does not resolve.
pub fn line_of(text: &str, key: &str, value: &str) -> Option<usize> {
    text.lines()
        .position(|raw| {
            let content = raw.split('#').next().unwrap_or_default();
            content.split_once('=').is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case(key) && v.trim() == value)
        })
        .map(|i| i + 1)
}

/// Reads and parses a configuration file.
pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = match std::fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) => return Err(ConfigError { file, line: None, message: format!("cannot read: {e}") }),
    };
    match std::str::from_utf8(&text) {
        Ok(text) => parse(text, &file),
        Err(e) => {
            // Line of the first bad byte, so the author can find it.
            let valid = &text[..e.valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            Err(ConfigError { file, line: Some(line), message: "not valid UTF-8".to_string() })
        }
    }
}

impl Config {
    /// The lines of a UAPI `set=1` request that configure exactly what `wg setconf` would with
    /// this file: `private_key`, `listen_port`, `fwmark` (each if given), `replace_peers=true`,
    /// then per peer `public_key`, `preshared_key`, `endpoint`, `persistent_keepalive_interval`
    /// (each if given), `replace_allowed_ips=true` and one `allowed_ip` per network. Keys are
    /// lower-case hex. Every line ends in `\n`; the `set=1` line and the blank line that ends
    /// the request are the caller's.
    ///
    /// `resolve` turns each peer's endpoint text into an address; its error is reported with
    /// the peer and endpoint it concerns. The result holds the private key in hex: wipe it after
    /// use if that matters.
    pub fn to_uapi_set(&self, resolve: &dyn Fn(&str) -> Result<SocketAddr, String>) -> Result<String, ConfigError> {
        let mut out = String::new();
        let mut put = |key: &str, value: &str| push_line(&mut out, key, "=", value);
        let iface = &self.interface;
        if let Some(key) = &iface.private_key {
            put("private_key", &key.to_hex());
        }
        if let Some(port) = iface.listen_port {
            put("listen_port", &port.to_string());
        }
        if let Some(mark) = iface.fwmark {
            put("fwmark", &mark.to_string());
        }
        put("replace_peers", "true");
        for peer in &self.peers {
            put("public_key", &peer.public_key.to_hex());
            if let Some(psk) = &peer.preshared_key {
                put("preshared_key", &psk.to_hex());
            }
            if let Some(endpoint) = &peer.endpoint {
                let addr = resolve(endpoint).map_err(|e| ConfigError {
                    file: String::new(),
                    line: None,
                    message: format!("peer {}: endpoint {}: {e}", peer.public_key.to_base64(), shown(endpoint)),
                })?;
                put("endpoint", &addr.to_string());
            }
            if let Some(interval) = peer.persistent_keepalive {
                put("persistent_keepalive_interval", &interval.to_string());
            }
            put("replace_allowed_ips", "true");
            for net in &peer.allowed_ips {
                put("allowed_ip", &net.to_string());
            }
        }
        Ok(out)
    }

    /// Writes the configuration back in wg-quick's format (what `SaveConfig` needs). A parsed
    /// configuration always writes out and reads back equal. Fails, naming the field, if a text
    /// field could not survive that trip: empty, with surrounding whitespace, with a newline or
    /// `#` (or, in a DNS entry, a comma or whitespace), or an endpoint [`parse`] would refuse.
    pub fn to_text(&self) -> Result<String, ConfigError> {
        let mut out = String::from("[Interface]\n");
        let iface = &self.interface;
        let mut put = |key: &str, value: &str| push_line(&mut out, key, " = ", value);
        if let Some(key) = &iface.private_key {
            put("PrivateKey", &key.to_base64());
        }
        if let Some(port) = iface.listen_port {
            put("ListenPort", &port.to_string());
        }
        match iface.fwmark {
            Some(0) => put("FwMark", "off"),
            Some(mark) => put("FwMark", &format!("{mark:#x}")),
            None => {}
        }
        if !iface.addresses.is_empty() {
            put("Address", &join(&iface.addresses));
        }
        if !iface.dns.is_empty() {
            for entry in &iface.dns {
                writable("DNS", entry, true)?;
            }
            put("DNS", &iface.dns.join(", "));
        }
        if let Some(mtu) = iface.mtu {
            put("MTU", &mtu.to_string());
        }
        if let Some(table) = &iface.table {
            writable("Table", table, false)?;
            put("Table", table);
        }
        for (name, hooks) in [
            ("PreUp", &iface.pre_up),
            ("PostUp", &iface.post_up),
            ("PreDown", &iface.pre_down),
            ("PostDown", &iface.post_down),
        ] {
            for hook in hooks {
                writable(name, hook, false)?;
                put(name, hook);
            }
        }
        if iface.save_config {
            put("SaveConfig", "true");
        }
        for peer in &self.peers {
            put("\n[Peer]\nPublicKey", &peer.public_key.to_base64());
            if let Some(psk) = &peer.preshared_key {
                put("PresharedKey", &psk.to_base64());
            }
            if !peer.allowed_ips.is_empty() {
                put("AllowedIPs", &join(&peer.allowed_ips));
            }
            if let Some(endpoint) = &peer.endpoint {
                check_endpoint(endpoint).map_err(|why| ConfigError {
                    file: String::new(),
                    line: None,
                    message: format!("cannot write Endpoint {}: {why}", shown(endpoint)),
                })?;
                put("Endpoint", endpoint);
            }
            match peer.persistent_keepalive {
                Some(0) => put("PersistentKeepalive", "off"),
                Some(interval) => put("PersistentKeepalive", &interval.to_string()),
                None => {}
            }
        }
        Ok(out)
    }
}

fn push_line(out: &mut String, key: &str, separator: &str, value: &str) {
    out.push_str(key);
    out.push_str(separator);
    out.push_str(value);
    out.push('\n');
}

fn join(nets: &[IpNet]) -> String {
    nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}

/// Whether `value` reads back unchanged as the value of `field` (see [`Config::to_text`]).
fn writable(field: &str, value: &str, list_item: bool) -> Result<(), ConfigError> {
    let why = if value.is_empty() {
        Some("it is empty")
    } else if value.trim() != value {
        Some("it has leading or trailing whitespace")
    } else if value.contains(['\n', '#']) {
        Some("it contains a newline or `#`")
    } else if list_item && value.contains(|c: char| c == ',' || c.is_whitespace()) {
        Some("a list entry cannot contain a comma or whitespace")
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError {
            file: String::new(),
            line: None,
            message: format!("cannot write {field} {}: {why}", shown(value)),
        }),
        None => Ok(()),
    }
}

/// A value for an error message: quoted, escaped, and cut short if long.
fn shown(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// A key or section name for an error message, or `None` if it does not look like one (it may
/// be a pasted secret, so it must not be echoed).
fn name_shown(name: &str) -> Option<&str> {
    (!name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(name)
}

/// Digits only (no sign, no spaces), within `T`'s range.
fn decimal<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_fwmark(text: &str) -> Result<u32, &'static str> {
    const EXPECTED: &str = "expected a decimal number, 0x followed by hex digits, or off";
    if text.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EXPECTED);
        }
        return u32::from_str_radix(hex, 16).map_err(|_| "out of range (at most 0xffffffff)");
    }
    if text.len() > 1 && text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a leading zero is ambiguous (wg reads it as octal); write it in decimal or 0x hex");
    }
    decimal(text).ok_or(EXPECTED)
}

/// `host:port` or `[host]:port`, numeric port 1-65535.
fn check_endpoint(text: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing `]` after the bracketed address")?;
        let port = after.strip_prefix(':').ok_or("expected `:port` after `]`")?;
        if host.contains('[') {
            return Err("stray `[` in the address");
        }
        (host, port)
    } else {
        let (host, port) = text.rsplit_once(':').ok_or("expected host:port or [IPv6]:port")?;
        if host.contains(':') {
            return Err("an IPv6 address must be written in brackets: [address]:port");
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.contains(char::is_whitespace) {
        return Err("the host contains whitespace");
    }
    match decimal::<u16>(port) {
        Some(p) if p != 0 => Ok(()),
        _ => Err("the port must be a number from 1 to 65535"),
    }
}

/// An address or network; a bare address is a host prefix (/32 or /128).
fn parse_net(text: &str) -> Option<IpNet> {
    if text.contains('/') { IpNet::from_str(text).ok() } else { IpAddr::from_str(text).ok().map(IpNet::from) }
}

/// A `[Peer]` being read: its header line and what it has said so far.
struct PeerDraft {
    header: usize,
    public_key: Option<(Key32, usize)>,
    preshared_key: Option<Key32>,
    allowed_ips: Vec<IpNet>,
    endpoint: Option<String>,
    persistent_keepalive: Option<u16>,
}

enum Section {
    None,
    Interface,
    Peer(PeerDraft),
}

const INTERFACE_KEYS: &[&str] = &[
    "privatekey",
    "listenport",
    "fwmark",
    "address",
    "dns",
    "mtu",
    "table",
    "preup",
    "postup",
    "predown",
    "postdown",
    "saveconfig",
];
const PEER_KEYS: &[&str] = &["publickey", "presharedkey", "allowedips", "endpoint", "persistentkeepalive"];

struct Parser<'a> {
    file: &'a str,
    section: Section,
    interface: InterfaceSection,
    interface_line: Option<usize>,
    peers: Vec<PeerSection>,
    /// Public keys seen so far, with the header line of their peer.
    seen: HashMap<Key32, usize>,
}

impl<'a> Parser<'a> {
    fn new(file: &'a str) -> Self {
        Parser {
            file,
            section: Section::None,
            interface: InterfaceSection::default(),
            interface_line: None,
            peers: Vec::new(),
            seen: HashMap::new(),
        }
    }

    fn error(&self, line: Option<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.to_string(), line, message: message.into() }
    }

    fn at(&self, line: usize, message: impl Into<String>) -> ConfigError {
        self.error(Some(line), message)
    }

    fn run(mut self, text: &str) -> Result<Config, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            if content.starts_with('[') {
                self.header(content, line)?;
                continue;
            }
            let Some((key, value)) = content.split_once('=') else {
                // Not echoed: a line without `=` may well be a pasted key.
                return Err(self.at(line, "expected `Key = Value`, a [Section] header, or a # comment"));
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(self.at(line, "missing key name before `=`"));
            }
            let lower = key.to_ascii_lowercase();
            match std::mem::replace(&mut self.section, Section::None) {
                Section::None => {
                    let what = name_shown(key).map_or("a key".to_string(), |k| format!("`{k}`"));
                    return Err(self.at(line, format!("{what} appears before any [Interface] or [Peer] section")));
                }
                Section::Interface => {
                    self.section = Section::Interface;
                    self.interface_key(&lower, key, value, line)?;
                }
                Section::Peer(mut draft) => {
                    let result = self.peer_key(&mut draft, &lower, key, value, line);
                    self.section = Section::Peer(draft);
                    result?;
                }
            }
        }
        self.finish_peer()?;
        if self.interface_line.is_none() {
            return Err(self.error(None, "no [Interface] section"));
        }
        Ok(Config { interface: self.interface, peers: self.peers })
    }

    fn header(&mut self, content: &str, line: usize) -> Result<(), ConfigError> {
        let Some(name) = content.strip_prefix('[').and_then(|s| s.strip_suffix(']')).map(str::trim) else {
            return Err(self.at(line, "malformed section header; expected [Interface] or [Peer]"));
        };
        self.finish_peer()?;
        if name.eq_ignore_ascii_case("interface") {
            if let Some(first) = self.interface_line {
                return Err(self.at(line, format!("second [Interface] section (the first is at line {first})")));
            }
            self.interface_line = Some(line);
            self.section = Section::Interface;
        } else if name.eq_ignore_ascii_case("peer") {
            self.section = Section::Peer(PeerDraft {
                header: line,
                public_key: None,
                preshared_key: None,
                allowed_ips: Vec::new(),
                endpoint: None,
                persistent_keepalive: None,
            });
        } else {
            let what = name_shown(name).map_or("unknown section".to_string(), |n| format!("unknown section [{n}]"));
            return Err(self.at(line, format!("{what}; expected [Interface] or [Peer]")));
        }
        Ok(())
    }

    /// Closes the `[Peer]` being read, if any: it must have a public key no other peer has.
    fn finish_peer(&mut self) -> Result<(), ConfigError> {
        let Section::Peer(draft) = std::mem::replace(&mut self.section, Section::None) else {
            return Ok(());
        };
        let Some((public_key, key_line)) = draft.public_key else {
            return Err(self.at(draft.header, "[Peer] section has no PublicKey"));
        };
        if let Some(first) = self.seen.get(&public_key) {
            return Err(
                self.at(key_line, format!("duplicate peer: this PublicKey is also that of the [Peer] at line {first}"))
            );
        }
        self.seen.insert(public_key.clone(), draft.header);
        self.peers.push(PeerSection {
            public_key,
            preshared_key: draft.preshared_key,
            allowed_ips: draft.allowed_ips,
            endpoint: draft.endpoint,
            persistent_keepalive: draft.persistent_keepalive,
        });
        Ok(())
    }

    fn key(&self, field: &str, value: &str, line: usize) -> Result<Key32, ConfigError> {
        Key32::from_base64(value).ok_or_else(|| {
            self.at(
                line,
                format!(
                    "{field} is not a valid key: expected 44 characters of base64 encoding exactly 32 bytes \
                     (got {} characters)",
                    value.chars().count()
                ),
            )
        })
    }

    fn invalid(&self, field: &str, value: &str, line: usize, why: &str) -> ConfigError {
        self.at(line, format!("invalid {field} {}: {why}", shown(value)))
    }

    fn unknown_key(&self, lower: &str, key: &str, line: usize, here: &str) -> ConfigError {
        let Some(name) = name_shown(key) else {
            return self.at(line, format!("malformed key name in {here}"));
        };
        let elsewhere = if here == "[Interface]" { PEER_KEYS } else { INTERFACE_KEYS };
        if elsewhere.contains(&lower) {
            let there = if here == "[Interface]" { "a [Peer]" } else { "the [Interface]" };
            self.at(line, format!("key `{name}` belongs in {there} section, not in {here}"))
        } else {
            self.at(line, format!("unknown key `{name}` in {here}"))
        }
    }

    fn interface_key(&mut self, lower: &str, key: &str, value: &str, line: usize) -> Result<(), ConfigError> {
        match lower {
            "privatekey" => self.interface.private_key = Some(self.key("PrivateKey", value, line)?),
            "listenport" => {
                let port = decimal(value)
                    .ok_or_else(|| self.invalid("ListenPort", value, line, "expected a port number from 0 to 65535"))?;
                self.interface.listen_port = Some(port);
            }
            "fwmark" => {
                let mark = parse_fwmark(value).map_err(|why| self.invalid("FwMark", value, line, why))?;
                self.interface.fwmark = Some(mark);
            }
            "address" => {
                for item in value.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()) {
                    let net = parse_net(item).ok_or_else(|| {
                        self.invalid("Address", item, line, "expected an IP address with an optional /prefix-length")
                    })?;
                    self.interface.addresses.push(net);
                }
            }
            "dns" => {
                let entries = value.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty());
                self.interface.dns.extend(entries.map(str::to_string));
            }
            "mtu" => {
                let mtu = decimal(value).ok_or_else(|| self.invalid("MTU", value, line, "expected a number"))?;
                self.interface.mtu = Some(mtu);
            }
            "table" => {
                if value.is_empty() {
                    return Err(self.at(line, "empty Table: expected off, auto, or a table number or name"));
                }
                let table = if value.eq_ignore_ascii_case("off") || value.eq_ignore_ascii_case("auto") {
                    value.to_ascii_lowercase()
                } else {
                    value.to_string()
                };
                self.interface.table = Some(table);
            }
            "preup" | "postup" | "predown" | "postdown" => {
                if value.is_empty() {
                    return Err(self.at(line, format!("empty {key}: expected a command")));
                }
                let hooks = match lower {
                    "preup" => &mut self.interface.pre_up,
                    "postup" => &mut self.interface.post_up,
                    "predown" => &mut self.interface.pre_down,
                    _ => &mut self.interface.post_down,
                };
                hooks.push(value.to_string());
            }
            "saveconfig" => {
                self.interface.save_config = if value.eq_ignore_ascii_case("true") {
                    true
                } else if value.eq_ignore_ascii_case("false") {
                    false
                } else {
                    return Err(self.invalid("SaveConfig", value, line, "expected true or false"));
                };
            }
            _ => return Err(self.unknown_key(lower, key, line, "[Interface]")),
        }
        Ok(())
    }

    fn peer_key(
        &self,
        draft: &mut PeerDraft,
        lower: &str,
        key: &str,
        value: &str,
        line: usize,
    ) -> Result<(), ConfigError> {
        match lower {
            "publickey" => {
                let public_key = self.key("PublicKey", value, line)?;
                draft.public_key = Some((public_key, line));
            }
            "presharedkey" => {
                let psk = self.key("PresharedKey", value, line)?;
                draft.preshared_key = Some(psk);
            }
            "allowedips" => {
                let mut nets = Vec::new();
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let net = parse_net(item).ok_or_else(|| {
                        self.invalid(
                            "AllowedIPs",
                            item,
                            line,
                            "expected an IP network address/prefix-length or an address",
                        )
                    })?;
                    nets.push(net.trunc());
                }
                draft.allowed_ips.extend(nets);
            }
            "endpoint" => {
                check_endpoint(value).map_err(|why| self.invalid("Endpoint", value, line, why))?;
                draft.endpoint = Some(value.to_string());
            }
            "persistentkeepalive" => {
                let interval = if value.eq_ignore_ascii_case("off") {
                    0
                } else {
                    decimal(value).ok_or_else(|| {
                        self.invalid("PersistentKeepalive", value, line, "expected seconds from 0 to 65535, or off")
                    })?
                };
                draft.persistent_keepalive = Some(interval);
            }
            _ => return Err(self.unknown_key(lower, key, line, "[Peer]")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Keys whose bytes the tests know: 0..32, 32..64, 0xe0..=0xff, and 32 x 0xab.
    const PRIV_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const PUB1_B64: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    const PUB2_B64: &str = "4OHi4+Tl5ufo6err7O3u7/Dx8vP09fb3+Pn6+/z9/v8=";
    const PSK_B64: &str = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=";

    #[test]
    fn line_of_finds_a_key_value_line_as_the_parser_reads_it() {
        let text = "[Interface]\n# Endpoint = a:1\n[Peer]\nendpoint=a:1  # first\nEndpoint = b:2\n";
        assert_eq!(line_of(text, "Endpoint", "a:1"), Some(4), "any case, spaces and a comment");
        assert_eq!(line_of(text, "Endpoint", "b:2"), Some(5));
        assert_eq!(line_of(text, "Endpoint", "c:3"), None);
        assert_eq!(line_of(text, "PublicKey", "a:1"), None);
    }

    fn bytes_from(start: u8) -> [u8; 32] {
        std::array::from_fn(|i| start.wrapping_add(i as u8))
    }

    /// Hex computed independently of `Key32::to_hex`.
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    const SAMPLE: &str = "\
# wg0 on the gateway
[Interface]
PrivateKey = AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=
ListenPort = 51820
FwMark = 0x1234
Address = 10.0.0.1/24, fd00::1/64
Address = 192.168.77.5
DNS = 1.1.1.1, 2606:4700:4700::1111
DNS = corp.example
MTU = 1380
Table = 1234
PreUp = echo pre-up %i
PostUp = iptables -A FORWARD -i %i -j ACCEPT   # let forwarded traffic through
PostUp = sysctl -w net.ipv4.ip_forward=1
PreDown = echo pre-down
PostDown = iptables -D FORWARD -i %i -j ACCEPT
SaveConfig = false

[Peer]   # laptop
PublicKey = ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=
PresharedKey = q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=
AllowedIPs = 10.0.0.2/32, fd00::2/128
AllowedIPs = 192.168.10.0/24
Endpoint = 203.0.113.7:51820
PersistentKeepalive = 25

[peer]
publickey=4OHi4+Tl5ufo6err7O3u7/Dx8vP09fb3+Pn6+/z9/v8=
allowedips = 0.0.0.0/0, ::/0
endpoint = [2001:db8::9]:4500
";

    fn sample() -> Config {
        parse(SAMPLE, "wg0.conf").expect("the sample parses")
    }

    fn err_of(text: &str) -> ConfigError {
        match parse(text, "t.conf") {
            Ok(cfg) => panic!("expected an error, parsed {cfg:?}"),
            Err(e) => e,
        }
    }

    /// Asserts the error is at `line` and mentions `fragment`.
    fn assert_err(text: &str, line: Option<usize>, fragment: &str) {
        let e = err_of(text);
        assert_eq!(e.file, "t.conf", "{e}");
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains(fragment), "{e:?} should mention {fragment:?}");
    }

    fn iface(body: &str) -> String {
        format!("[Interface]\nPrivateKey = {PRIV_B64}\n{body}")
    }

    #[test]
    fn sample_parses_into_every_field() {
        let cfg = sample();
        let i = &cfg.interface;
        assert_eq!(i.private_key.as_ref().unwrap().as_bytes(), &bytes_from(0));
        assert_eq!(i.listen_port, Some(51820));
        assert_eq!(i.fwmark, Some(0x1234));
        assert_eq!(i.addresses, vec![net("10.0.0.1/24"), net("fd00::1/64"), net("192.168.77.5/32")]);
        // Host bits are kept on addresses.
        assert_eq!(i.addresses[0].addr(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(i.dns, vec!["1.1.1.1", "2606:4700:4700::1111", "corp.example"]);
        assert_eq!(i.mtu, Some(1380));
        assert_eq!(i.table.as_deref(), Some("1234"));
        assert_eq!(i.pre_up, vec!["echo pre-up %i"]);
        assert_eq!(i.post_up, vec!["iptables -A FORWARD -i %i -j ACCEPT", "sysctl -w net.ipv4.ip_forward=1"]);
        assert_eq!(i.pre_down, vec!["echo pre-down"]);
        assert_eq!(i.post_down, vec!["iptables -D FORWARD -i %i -j ACCEPT"]);
        assert!(!i.save_config);

        assert_eq!(cfg.peers.len(), 2);
        let p = &cfg.peers[0];
        assert_eq!(p.public_key.as_bytes(), &bytes_from(32));
        assert_eq!(p.preshared_key.as_ref().unwrap().as_bytes(), &[0xab; 32]);
        assert_eq!(p.allowed_ips, vec![net("10.0.0.2/32"), net("fd00::2/128"), net("192.168.10.0/24")]);
        assert_eq!(p.endpoint.as_deref(), Some("203.0.113.7:51820"));
        assert_eq!(p.persistent_keepalive, Some(25));
        let q = &cfg.peers[1];
        assert_eq!(q.public_key.as_bytes(), &bytes_from(0xe0));
        assert_eq!(q.preshared_key, None);
        assert_eq!(q.allowed_ips, vec![net("0.0.0.0/0"), net("::/0")]);
        assert_eq!(q.endpoint.as_deref(), Some("[2001:db8::9]:4500"));
        assert_eq!(q.persistent_keepalive, None);
    }

    #[test]
    fn sample_round_trips_through_text() {
        let cfg = sample();
        let text = cfg.to_text().unwrap();
        assert!(text.starts_with("[Interface]\nPrivateKey = "), "{text}");
        let again = parse(&text, "written.conf").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again, cfg);
        assert_eq!(again.to_text().unwrap(), text);
    }

    #[test]
    fn details_of_values() {
        // Bare AllowedIPs address: host route; host bits masked off networks.
        let cfg = parse(
            &format!("{}[Peer]\nPublicKey={PUB1_B64}\nAllowedIPs = 10.1.2.3, fd00::7, 10.9.9.9/16,\n", iface("")),
            "f",
        )
        .unwrap();
        assert_eq!(cfg.peers[0].allowed_ips, vec![net("10.1.2.3/32"), net("fd00::7/128"), net("10.9.0.0/16")]);
        // Address and DNS split on whitespace too; empty list values add nothing.
        let cfg = parse(&iface("Address = 10.0.0.1/8 fd00::1\nDNS = 9.9.9.9 8.8.8.8\nDNS =\n"), "f").unwrap();
        assert_eq!(cfg.interface.addresses, vec![net("10.0.0.1/8"), net("fd00::1/128")]);
        assert_eq!(cfg.interface.dns, vec!["9.9.9.9", "8.8.8.8"]);
        // FwMark forms, keepalive off, Table spelling, SaveConfig in any case, later scalar wins.
        for (text, mark) in [("123", 123), ("0x1F", 0x1f), ("0XfF", 0xff), ("off", 0), ("OFF", 0), ("0", 0)] {
            let cfg = parse(&iface(&format!("FwMark = {text}\n")), "f").unwrap();
            assert_eq!(cfg.interface.fwmark, Some(mark), "{text}");
        }
        let cfg = parse(
            &format!(
                "{}[Peer]\nPublicKey={PUB1_B64}\nPersistentKeepalive = Off\n",
                iface("Table = AUTO\nSaveConfig = True\nListenPort = 1\nListenPort = 0\n")
            ),
            "f",
        )
        .unwrap();
        assert_eq!(cfg.interface.table.as_deref(), Some("auto"));
        assert!(cfg.interface.save_config);
        assert_eq!(cfg.interface.listen_port, Some(0));
        assert_eq!(cfg.peers[0].persistent_keepalive, Some(0));
        // Section names and keys in any case, [Interface] after the peers, CRLF, a BOM, blank
        // and comment-only lines.
        let text = format!(
            "\u{feff}# top\r\n\r\n[PEER]\r\nPUBLICKEY = {PUB1_B64}\r\n[ interface ]\r\n  privatekey={PRIV_B64}  # c\r\n"
        );
        let cfg = parse(&text, "f").unwrap();
        assert_eq!(cfg.peers[0].public_key.as_bytes(), &bytes_from(32));
        assert!(cfg.interface.private_key.is_some());
        // An interface without a private key (wg setconf allows it) and no peers is fine.
        assert_eq!(parse("[Interface]\n", "f").unwrap(), Config::default());
    }

    #[test]
    fn errors_name_file_line_and_cause() {
        let peer1 = format!("[Peer]\nPublicKey = {PUB1_B64}\n");
        // A key before any section (the key is named).
        assert_err("# c\nListenPort = 1\n[Interface]\n", Some(2), "`ListenPort` appears before any");
        // Unknown keys, named, and keys in the wrong section.
        assert_err(&iface("Bogus = 1\n"), Some(3), "unknown key `Bogus` in [Interface]");
        assert_err(&format!("{}{peer1}Colour = blue\n", iface("")), Some(5), "unknown key `Colour` in [Peer]");
        assert_err(&iface("AllowedIPs = 10.0.0.0/8\n"), Some(3), "`AllowedIPs` belongs in a [Peer] section");
        assert_err(&format!("{}{peer1}MTU = 1400\n", iface("")), Some(5), "`MTU` belongs in the [Interface]");
        // A peer without a public key: the line of its header.
        assert_err(&format!("{}\n[Peer]\nAllowedIPs = 10.0.0.2/32\n\n{peer1}", iface("")), Some(4), "no PublicKey");
        assert_err(&format!("{}[Peer]\n", iface("")), Some(3), "no PublicKey");
        // Duplicate public keys: the line of the second PublicKey, naming the first peer's line.
        assert_err(
            &format!(
                "{}{peer1}AllowedIPs = 10.0.0.2/32\n[Peer]\nAllowedIPs = 10.0.0.3/32\nPublicKey = {PUB1_B64}\n",
                iface("")
            ),
            Some(8),
            "duplicate peer: this PublicKey is also that of the [Peer] at line 3",
        );
        // Sections: none, two, unknown, malformed.
        assert_err(&peer1, None, "no [Interface] section");
        assert_err("", None, "no [Interface] section");
        assert_err(
            &format!("{}\n[Interface]\n", iface("")),
            Some(4),
            "second [Interface] section (the first is at line 1)",
        );
        assert_err(&iface("[Server]\n"), Some(3), "unknown section [Server]");
        assert_err(&iface("[Peer\n"), Some(3), "malformed section header");
        // A line that is not key = value, and one with no key.
        assert_err(&iface("just words\n"), Some(3), "expected `Key = Value`");
        assert_err(&iface(" = 5\n"), Some(3), "missing key name");
        // Malformed values.
        assert_err(&iface("ListenPort = 65536\n"), Some(3), "invalid ListenPort \"65536\"");
        assert_err(&iface("ListenPort = -1\n"), Some(3), "invalid ListenPort");
        assert_err(&iface("FwMark = 0x\n"), Some(3), "invalid FwMark");
        assert_err(&iface("FwMark = 0x100000000\n"), Some(3), "out of range");
        assert_err(&iface("FwMark = 017\n"), Some(3), "leading zero");
        assert_err(&iface("MTU = big\n"), Some(3), "invalid MTU");
        assert_err(&iface("SaveConfig = yes\n"), Some(3), "expected true or false");
        assert_err(&iface("Table =\n"), Some(3), "empty Table");
        assert_err(&iface("PostUp =\n"), Some(3), "expected a command");
        assert_err(&iface("Address = 10.0.0.1, 10.0.0.300/24\n"), Some(3), "invalid Address \"10.0.0.300/24\"");
        assert_err(&iface("Address = 10.0.0.0/33\n"), Some(3), "invalid Address");
        let in_peer = |line: &str| format!("{}{peer1}{line}\n", iface(""));
        assert_err(&in_peer("AllowedIPs = 10.0.0.0/8, fd00::/129"), Some(5), "invalid AllowedIPs \"fd00::/129\"");
        assert_err(&in_peer("PersistentKeepalive = 70000"), Some(5), "invalid PersistentKeepalive");
        assert_err(&in_peer("Endpoint = host.example"), Some(5), "expected host:port");
        assert_err(&in_peer("Endpoint = 2001:db8::1:51820"), Some(5), "must be written in brackets");
        assert_err(&in_peer("Endpoint = [2001:db8::1]51820"), Some(5), "expected `:port` after `]`");
        assert_err(&in_peer("Endpoint = host:0"), Some(5), "port must be a number");
        assert_err(&in_peer("Endpoint = :51820"), Some(5), "host is empty");
        // Display: FILE:LINE: message, or FILE: message.
        assert_eq!(err_of(&iface("MTU = x\n")).to_string(), "t.conf:3: invalid MTU \"x\": expected a number");
        assert_eq!(err_of("").to_string(), "t.conf: no [Interface] section");
    }

    #[test]
    fn bad_keys_say_so_without_echoing_them() {
        let short = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="; // 31 bytes
        let long = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"; // 33 bytes
        let not_b64 = "not-base64-at-all!not-base64-at-all!not-bas=";
        let truncated = &PRIV_B64[..43];
        for bad in [short, long, not_b64, truncated, "", "secret"] {
            let text = format!("[Interface]\nPrivateKey = {bad}\n");
            let e = err_of(&text);
            assert_eq!(e.line, Some(2));
            assert!(e.message.contains("PrivateKey is not a valid key"), "{e}");
            assert!(e.message.contains("base64") && e.message.contains("32 bytes"), "{e}");
            if !bad.is_empty() {
                assert!(!e.to_string().contains(bad), "{e} echoes the key");
            }
        }
        assert_err(&format!("{}[Peer]\nPublicKey = {short}\n", iface("")), Some(4), "PublicKey is not a valid key");
        assert_err(
            &format!("{}[Peer]\nPublicKey = {PUB1_B64}\nPresharedKey = {long}\n", iface("")),
            Some(5),
            "PresharedKey is not a valid key",
        );
        // A pasted key on a line of its own, or as a key name, or a section name, is not echoed.
        for line in [PRIV_B64.trim_end_matches('='), PRIV_B64, &format!("[{PRIV_B64}]")] {
            let e = err_of(&format!("[Interface]\n{line}\n"));
            assert_eq!(e.line, Some(2));
            assert!(!e.to_string().contains(&PRIV_B64[..40]), "{e} echoes the key");
        }
        // Debug redacts private and preshared keys, shows public keys.
        let dbg = format!("{:?}", sample());
        assert!(!dbg.contains(PRIV_B64) && !dbg.contains(PSK_B64), "{dbg}");
        assert!(!dbg.contains("[0, 1, 2, 3") && !dbg.contains("171, 171"), "{dbg}");
        assert!(dbg.contains("<redacted>") && dbg.contains(PUB1_B64), "{dbg}");
    }

    #[test]
    fn key_forms() {
        let key = Key32::from_base64(PUB2_B64).unwrap();
        assert_eq!(key.as_bytes(), &bytes_from(0xe0));
        assert_eq!(key.to_base64(), PUB2_B64);
        assert_eq!(key.to_hex(), hex(&bytes_from(0xe0)));
        assert_eq!(Key32::from([7; 32]), Key32::from_bytes([7; 32]));
        // Non-canonical trailing bits are refused (`=` must follow a final char with zero low bits).
        assert!(Key32::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=").is_none());
        // URL-safe alphabet is not the wg form.
        assert!(Key32::from_base64("4OHi4-Tl5ufo6err7O3u7_Dx8vP09fb3-Pn6-_z9_v8=").is_none());
    }

    #[test]
    fn uapi_set_matches_wg_setconf_line_by_line() {
        let cfg = sample();
        let resolve = |ep: &str| -> Result<SocketAddr, String> { ep.parse().map_err(|e| format!("{e}")) };
        let uapi = cfg.to_uapi_set(&resolve).unwrap();
        assert!(uapi.ends_with('\n') && !uapi.ends_with("\n\n"));
        let expected = [
            format!("private_key={}", hex(&bytes_from(0))),
            "listen_port=51820".to_string(),
            format!("fwmark={}", 0x1234),
            "replace_peers=true".to_string(),
            format!("public_key={}", hex(&bytes_from(32))),
            format!("preshared_key={}", hex(&[0xab; 32])),
            "endpoint=203.0.113.7:51820".to_string(),
            "persistent_keepalive_interval=25".to_string(),
            "replace_allowed_ips=true".to_string(),
            "allowed_ip=10.0.0.2/32".to_string(),
            "allowed_ip=fd00::2/128".to_string(),
            "allowed_ip=192.168.10.0/24".to_string(),
            format!("public_key={}", hex(&bytes_from(0xe0))),
            "endpoint=[2001:db8::9]:4500".to_string(),
            "replace_allowed_ips=true".to_string(),
            "allowed_ip=0.0.0.0/0".to_string(),
            "allowed_ip=::/0".to_string(),
        ];
        let lines: Vec<&str> = uapi.lines().collect();
        for (n, (got, want)) in lines.iter().zip(expected.iter()).enumerate() {
            assert_eq!(got, want, "line {}", n + 1);
        }
        assert_eq!(lines.len(), expected.len(), "{uapi}");
        assert_eq!(expected[0], "private_key=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");

        // Minimal config: no optional lines, off values sent as 0.
        let text = format!("[Interface]\nFwMark = off\n[Peer]\nPublicKey = {PUB1_B64}\nPersistentKeepalive = off\n");
        let uapi = parse(&text, "f").unwrap().to_uapi_set(&resolve).unwrap();
        let want = format!(
            "fwmark=0\nreplace_peers=true\npublic_key={}\npersistent_keepalive_interval=0\nreplace_allowed_ips=true\n",
            hex(&bytes_from(32))
        );
        assert_eq!(uapi, want);
    }

    #[test]
    fn uapi_set_uses_the_resolver_and_reports_its_failure() {
        let cfg = sample();
        let calls = std::cell::RefCell::new(Vec::new());
        let resolve = |ep: &str| -> Result<SocketAddr, String> {
            calls.borrow_mut().push(ep.to_string());
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 7))
        };
        let uapi = cfg.to_uapi_set(&resolve).unwrap();
        assert_eq!(*calls.borrow(), vec!["203.0.113.7:51820", "[2001:db8::9]:4500"]);
        assert_eq!(uapi.matches("endpoint=[::1]:7\n").count(), 2);

        let failing = |_: &str| -> Result<SocketAddr, String> { Err("no such host".into()) };
        let e = cfg.to_uapi_set(&failing).unwrap_err();
        assert!(e.message.contains(PUB1_B64) && e.message.contains("203.0.113.7:51820"), "{e}");
        assert!(e.to_string().ends_with("no such host"), "{e}");
    }

    #[test]
    fn to_text_refuses_what_would_not_read_back() {
        let mut cfg = sample();
        cfg.interface.post_up.push("echo hi # there".into());
        assert!(cfg.to_text().unwrap_err().message.contains("PostUp"));
        let mut cfg = sample();
        cfg.interface.dns.push("a b".into());
        assert!(cfg.to_text().unwrap_err().message.contains("DNS"));
        let mut cfg = sample();
        cfg.peers[0].endpoint = Some("nohost".into());
        assert!(cfg.to_text().unwrap_err().message.contains("Endpoint"));
    }

    #[test]
    fn parse_file_reads_and_names_the_file() {
        let dir = std::env::temp_dir().join(format!("veil-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("wg7.conf");
        std::fs::write(&good, SAMPLE).unwrap();
        assert_eq!(parse_file(&good).unwrap(), sample());

        let bad = dir.join("bad.conf");
        std::fs::write(&bad, "[Interface]\nMTU = 1\nMTU = x\n").unwrap();
        let e = parse_file(&bad).unwrap_err();
        assert_eq!(e.to_string(), format!("{}:3: invalid MTU \"x\": expected a number", bad.display()));

        let binary = dir.join("binary.conf");
        std::fs::write(&binary, b"[Interface]\n\xff\n").unwrap();
        assert_eq!(parse_file(&binary).unwrap_err().line, Some(2));

        let missing = dir.join("missing.conf");
        let e = parse_file(&missing).unwrap_err();
        assert_eq!(e.line, None);
        assert!(e.to_string().starts_with(&format!("{}: cannot read", missing.display())), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Pieces that steer random text into the parser's corners.
    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("[Interface]".to_string()),
            Just("[Peer]".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just(" = ".to_string()),
            Just("#".to_string()),
            Just(",".to_string()),
            Just("/".to_string()),
            Just(":".to_string()),
            Just("off".to_string()),
            Just("0x".to_string()),
            Just(PRIV_B64.to_string()),
            Just(PUB1_B64.to_string()),
            prop::sample::select(
                INTERFACE_KEYS.iter().chain(PEER_KEYS.iter()).map(|k| k.to_string()).collect::<Vec<_>>()
            ),
            "[0-9]{1,12}",
            "[0-9a-f:.]{1,20}",
            "\\PC{0,8}",
        ]
    }

    /// Whatever parses must also convert without panicking, and write out and read back equal.
    fn exercise(text: &str) -> Result<(), TestCaseError> {
        if let Ok(cfg) = parse(text, "fuzz.conf") {
            let resolve = |ep: &str| -> Result<SocketAddr, String> {
                if ep.ends_with('0') { Err("refused".into()) } else { Ok(SocketAddr::from(([192, 0, 2, 1], 1))) }
            };
            let _ = cfg.to_uapi_set(&resolve);
            let written = cfg.to_text().map_err(|e| TestCaseError::fail(format!("{e} for {text:?}")))?;
            let again = parse(&written, "written").map_err(|e| TestCaseError::fail(format!("{e}\n{written}")))?;
            prop_assert_eq!(again, cfg);
        }
        Ok(())
    }

    fn arb_config() -> impl Strategy<Value = Config> {
        let key = any::<[u8; 32]>().prop_map(Key32::from);
        let v4 = (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| IpNet::new(Ipv4Addr::from(a).into(), l).unwrap());
        let v6 = (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, l)| IpNet::new(Ipv6Addr::from(a).into(), l).unwrap());
        let anynet = prop_oneof![v4, v6];
        let text = "[a-zA-Z0-9%=./ -]{0,20}".prop_map(|s| format!("x{s}y"));
        let endpoint = prop_oneof![
            ("[a-z]{1,10}", 1u16..).prop_map(|(h, p)| format!("{h}.example:{p}")),
            (any::<[u8; 4]>(), 1u16..).prop_map(|(a, p)| SocketAddr::from((a, p)).to_string()),
            (any::<[u8; 16]>(), 1u16..).prop_map(|(a, p)| SocketAddr::from((Ipv6Addr::from(a), p)).to_string()),
        ];
        let peer =
            (
                key.clone(),
                prop::option::of(key.clone()),
                prop::collection::vec(anynet.clone().prop_map(|n| n.trunc()), 0..4),
                prop::option::of(endpoint),
                prop::option::of(any::<u16>()),
            )
                .prop_map(|(public_key, preshared_key, allowed_ips, endpoint, persistent_keepalive)| {
                    PeerSection { public_key, preshared_key, allowed_ips, endpoint, persistent_keepalive }
                });
        let hooks = prop::collection::vec(text.clone(), 0..3);
        let interface = (
            (prop::option::of(key), prop::option::of(any::<u16>()), prop::option::of(any::<u32>())),
            (prop::collection::vec(anynet, 0..4), prop::collection::vec("[a-z0-9.:]{1,15}", 0..3)),
            (
                prop::option::of(any::<u32>()),
                prop::option::of(prop_oneof![Just("off".into()), Just("auto".into()), text]),
            ),
            (hooks.clone(), hooks.clone(), hooks.clone(), hooks, any::<bool>()),
        )
            .prop_map(|((private_key, listen_port, fwmark), (addresses, dns), (mtu, table), hooks)| {
                let (pre_up, post_up, pre_down, post_down, save_config) = hooks;
                InterfaceSection {
                    private_key,
                    listen_port,
                    fwmark,
                    addresses,
                    dns,
                    mtu,
                    table,
                    pre_up,
                    post_up,
                    pre_down,
                    post_down,
                    save_config,
                }
            });
        (interface, prop::collection::vec(peer, 0..4)).prop_map(|(interface, mut peers)| {
            let mut seen = std::collections::HashSet::new();
            peers.retain(|p| seen.insert(*p.public_key.as_bytes()));
            Config { interface, peers }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_text_never_panics(text in "\\PC{0,300}") {
            exercise(&text)?;
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            exercise(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn token_soup_never_panics(tokens in prop::collection::vec(token(), 0..60)) {
            exercise(&tokens.concat())?;
        }

        #[test]
        fn mutated_sample_never_panics(edits in prop::collection::vec((0u8..5, any::<usize>(), any::<char>()), 1..8)) {
            let mut chars: Vec<char> = SAMPLE.chars().collect();
            for (op, at, c) in edits {
                let at = at % (chars.len() + 1);
                match op {
                    0 => { if at < chars.len() { chars.remove(at); } }
                    1 => chars.insert(at, c),
                    2 => { if at < chars.len() { chars[at] = c; } }
                    // Cut a run of characters (often whole lines).
                    3 => { let end = (at + usize::from(c as u8)).min(chars.len()); chars.drain(at..end); }
                    // Copy a run to the end (duplicates keys, sections and peers).
                    _ => { let end = (at + usize::from(c as u8)).min(chars.len()); let run = chars[at..end].to_vec(); chars.extend(run); }
                }
            }
            exercise(&chars.into_iter().collect::<String>())?;
        }

        #[test]
        fn generated_configs_round_trip(cfg in arb_config()) {
            let text = cfg.to_text().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let parsed = parse(&text, "gen.conf").map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(&parsed, &cfg);
            let uapi = cfg.to_uapi_set(&|_| Ok(SocketAddr::from(([127, 0, 0, 1], 9)))).unwrap();
            prop_assert_eq!(uapi.matches("public_key=").count(), cfg.peers.len());
        }
    }
}
