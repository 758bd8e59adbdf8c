//! `veil genkey`, `veil pubkey`, `veil genpsk`: the same input and output as `wg`'s commands.

use std::io::{Read, Write};

use rand_core::OsRng;

use crate::noise::{PresharedKey, StaticSecret};

/// A new private key, base64, as `wg genkey` prints it.
pub fn genkey() -> String {
    StaticSecret::random(&mut OsRng).to_base64().to_string()
}

/// A new preshared key, base64.
pub fn genpsk() -> String {
    PresharedKey::random(&mut OsRng).to_base64().to_string()
}

/// The public key of the private key given as base64 text.
pub fn pubkey(private_b64: &str) -> Result<String, String> {
    let secret = StaticSecret::from_base64(private_b64).map_err(|e| format!("invalid private key: {e}"))?;
    Ok(secret.public_key().to_base64())
}

/// Runs `pubkey` on standard input, writing to standard output.
pub fn pubkey_stdio() -> Result<(), String> {
    let mut input = String::new();
    std::io::stdin().take(4096).read_to_string(&mut input).map_err(|e| format!("reading standard input: {e}"))?;
    let out = pubkey(&input)?;
    writeln!(std::io::stdout(), "{out}").map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_match_rfc7748() {
        let k = genkey();
        assert_eq!(k.len(), 44);
        assert!(pubkey(&k).is_ok());
        // RFC 7748 6.1, Alice: private 77076d0a..., public 8520f009...
        let alice = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
        assert_eq!(pubkey(alice).unwrap(), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
        assert!(pubkey("not a key").is_err());
        assert_eq!(genpsk().len(), 44);
    }
}
